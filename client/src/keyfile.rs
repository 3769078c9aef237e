//! Keys kept in files (`--key-file`, `TASKHUB_KEY_FILE`), so they stay out of `ps` and shell
//! history.

use std::path::Path;

use taskhub_core::auth::Secret;
use taskhub_core::keyfile;

/// The key in `path` ([`taskhub_core::keyfile::read_key_file`]), with a warning logged when
/// users other than its owner can read it.
pub fn read_key_file(path: &Path) -> Result<String, String> {
    let key = keyfile::read_key_file(path)?;
    if let Some(mode) = keyfile::loose_mode(path) {
        tracing::warn!("{}", keyfile::loose_mode_warning(path, mode));
    }
    Ok(key)
}

pub use keyfile::write_key_file;

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
