//! Keys kept in files (`--key-file`, `TASKHUB_KEY_FILE`, a key registry's `key_file`), so they
//! stay out of `ps` and shell history. Shared by the hub and its clients.

use std::path::Path;

/// The key in `path`: its text without surrounding whitespace (the trailing newline an editor or
/// `echo` adds). The error names the file. Callers warn when [`loose_mode`] says others can read
/// it.
pub fn read_key_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("the key file {} is empty", path.display()));
    }
    Ok(key.to_string())
}

/// The permission bits of a key file that users other than its owner can read or write (Unix),
/// as a warning's `chmod 600` hint; `None` when only its owner can.
pub fn loose_mode(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).ok()?.permissions().mode();
        (mode & 0o077 != 0).then_some(mode & 0o777)
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// The warning for a key file [`loose_mode`] found readable by others.
pub fn loose_mode_warning(path: &Path, mode: u32) -> String {
    format!(
        "the key file {} can be read by other users (mode {mode:o}); chmod 600 it",
        path.display()
    )
}

/// Write a new key to `path`, readable by its owner only; fails if the file exists.
pub fn write_key_file(path: &Path, key: &str) -> Result<(), String> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(path)
        .map_err(|e| format!("cannot create the key file {}: {e}", path.display()))?;
    writeln!(f, "{key}").map_err(|e| format!("cannot write the key file {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_key_file_round_trips_and_bad_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("taskhub-keyfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("hub.key");
        write_key_file(&path, "s3cret").unwrap();
        assert_eq!(read_key_file(&path).unwrap(), "s3cret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            assert_eq!(loose_mode(&path), None);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert_eq!(loose_mode(&path), Some(0o644));
            assert!(loose_mode_warning(&path, 0o644).contains("mode 644"));
        }
        // Never overwritten.
        assert!(
            write_key_file(&path, "other")
                .unwrap_err()
                .contains("hub.key")
        );
        std::fs::write(dir.join("empty"), "\n").unwrap();
        assert!(
            read_key_file(&dir.join("empty"))
                .unwrap_err()
                .contains("is empty")
        );
        assert!(
            read_key_file(&dir.join("missing"))
                .unwrap_err()
                .contains("missing")
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
