//! Keys kept in files (`--key-file`, `TASKHUB_KEY_FILE`), so they stay out of `ps` and shell
//! history.

use std::path::Path;

use taskhub_core::auth::Secret;

/// The key in `path`: its text without surrounding whitespace (the trailing newline an editor or
/// `echo` adds). The error names the file. A file others can read is used, with a warning.
pub fn read_key_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the key file {}: {e}", path.display()))?;
    let key = text.trim();
    if key.is_empty() {
        return Err(format!("the key file {} is empty", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                "the key file {} can be read by other users (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Ok(key.to_string())
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

/// How a client proves itself: a key id and its secret (a key's, or a token's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: String,
    pub secret: Secret,
}

/// The credentials the usual flags name: `--token`, or `--key`/`--key-file` under `--key-id`.
/// `Ok(None)` when none is given; errors name the flag or file at fault.
pub fn credentials(
    key: Option<&str>,
    key_file: Option<&Path>,
    key_id: &str,
    token: Option<&str>,
) -> Result<Option<Credentials>, String> {
    if let Some(token) = token {
        let (key_id, secret, _) =
            taskhub_core::token::credentials(token).map_err(|e| format!("--token: {e}"))?;
        return Ok(Some(Credentials { key_id, secret }));
    }
    let key = match (key, key_file) {
        (Some(""), _) => return Err("--key must not be empty".into()),
        (Some(k), _) => k.to_string(),
        (None, Some(path)) => read_key_file(path)?,
        (None, None) => return Ok(None),
    };
    Ok(Some(Credentials {
        key_id: key_id.to_string(),
        secret: Secret::new(key),
    }))
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
