//! Tokens: self-contained, signed credentials with their own rights and expiry, for browser tabs
//! and anything else that should not hold a key.
//!
//! A token is `th1.CLAIMS.SIG` (both parts base64url without padding):
//! - `CLAIMS` is JSON: `{"id": "<16 hex>", "iss": "<key id>", "exp": <Unix seconds>, "rights": {…}}`;
//! - `SIG` is `HMAC-SHA256(secret of key "iss", "taskhub-token\n" + "th1." + CLAIMS)`.
//!
//! In the handshake the token works as a key: its key id is `th1.CLAIMS` and its secret is
//! `SIG`. The hub recomputes `SIG` from the issuer's key, so it keeps no state per token (only a
//! list of revoked ids), and the secret never crosses the wire.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::auth::Secret;
use crate::rights::Rights;

/// How every token, and every token's key id, starts.
pub const PREFIX: &str = "th1.";
/// Longest token key id the hub reads.
pub const MAX_KEY_ID: usize = 4096;
/// Bytes in a token id (16 hex digits).
pub const ID_BYTES: usize = 8;

/// What a token says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// For revocation: 16 lowercase hex digits.
    pub id: String,
    /// The key id of the key that signed it.
    pub iss: String,
    /// When it stops working, in Unix seconds.
    pub exp: u64,
    #[serde(default)]
    pub rights: Rights,
}

/// Why a string is not a token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a taskhub token: {0}")]
pub struct TokenError(String);

fn hmac(issuer: &Secret, key_id: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(issuer.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    m.update(b"taskhub-token\n");
    m.update(key_id.as_bytes());
    m
}

fn mac(issuer: &Secret, key_id: &str) -> [u8; 32] {
    hmac(issuer, key_id).finalize().into_bytes().into()
}

/// Sign `claims` with the issuer's key: the token to hand out.
pub fn issue(claims: &Claims, issuer: &Secret) -> String {
    let json = serde_json::to_vec(claims).unwrap_or_else(|_| unreachable!("claims serialize"));
    let key_id = format!("{PREFIX}{}", base64url(&json));
    let sig = base64url(&mac(issuer, &key_id));
    format!("{key_id}.{sig}")
}

/// The secret a token with key id `key_id` has, when signed by `issuer`: what the hub checks the
/// client's proof with.
pub fn secret(key_id: &str, issuer: &Secret) -> Secret {
    Secret::new(mac(issuer, key_id).to_vec())
}

/// Whether `signature` is the one `issuer` gives the token with key id `key_id` (checked in
/// constant time): for a token presented whole, as an HTTP bearer credential.
pub fn signed_by(key_id: &str, signature: &Secret, issuer: &Secret) -> bool {
    hmac(issuer, key_id)
        .verify_slice(signature.expose())
        .is_ok()
}

/// Whether `key_id` names a token rather than a key.
pub fn is_token_id(key_id: &str) -> bool {
    key_id.starts_with(PREFIX)
}

/// The claims in a token's key id (`th1.CLAIMS`).
pub fn claims(key_id: &str) -> Result<Claims, TokenError> {
    if key_id.len() > MAX_KEY_ID {
        return Err(TokenError(format!(
            "its key id is {} bytes, over {MAX_KEY_ID}",
            key_id.len()
        )));
    }
    let body = key_id
        .strip_prefix(PREFIX)
        .ok_or_else(|| TokenError(format!("it does not start with {PREFIX:?}")))?;
    let json =
        unbase64url(body).ok_or_else(|| TokenError("its claims are not base64url".into()))?;
    let claims: Claims = serde_json::from_slice(&json)
        .map_err(|e| TokenError(format!("its claims do not read: {e}")))?;
    if !crate::auth::is_lower_hex(&claims.id, ID_BYTES) {
        return Err(TokenError("its id is not 16 lowercase hex digits".into()));
    }
    Ok(claims)
}

/// Split a token into what the handshake uses: its key id and its secret. Checks the form, not
/// the signature (only the hub can).
pub fn credentials(token: &str) -> Result<(String, Secret, Claims), TokenError> {
    let token = token.trim();
    let (key_id, sig) = token
        .rsplit_once('.')
        .filter(|(k, _)| k.len() > PREFIX.len())
        .ok_or_else(|| TokenError(format!("expected {PREFIX}CLAIMS.SIGNATURE")))?;
    let claims = claims(key_id)?;
    let sig = unbase64url(sig)
        .filter(|s| s.len() == 32)
        .ok_or_else(|| TokenError("its signature is not 32 bytes of base64url".into()))?;
    Ok((key_id.to_string(), Secret::new(sig), claims))
}

/// What a join link's credential is: a token (`th1.…`) or, from older links, a key under the
/// default key id. Returns the key id and secret for the handshake.
pub fn key_or_token(credential: &str) -> Result<(String, Secret), TokenError> {
    if is_token_id(credential.trim()) {
        let (key_id, secret, _) = credentials(credential)?;
        Ok((key_id, secret))
    } else {
        Ok((
            crate::auth::DEFAULT_KEY_ID.to_string(),
            Secret::new(credential),
        ))
    }
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Base64url without padding (RFC 4648 section 5).
pub fn base64url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// The bytes of unpadded base64url text, or `None` if it is not that.
pub fn unbase64url(text: &str) -> Option<Vec<u8>> {
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    for chunk in text.as_bytes().chunks(4) {
        let mut n: u32 = 0;
        for (i, &c) in chunk.iter().enumerate() {
            let v = ALPHABET.iter().position(|&a| a == c)? as u32;
            n |= v << (18 - 6 * i);
        }
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..chunk.len() - 1]);
    }
    // Non-canonical encodings (stray low bits) are refused, so one token has one spelling.
    if base64url(&out) != text {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            id: "0123456789abcdef".into(),
            iss: "admin".into(),
            exp: 1_900_000_000,
            rights: Rights {
                consume: vec![crate::Pattern::new("tasks").unwrap()],
                ..Rights::default()
            },
        }
    }

    #[test]
    fn a_token_carries_its_claims_and_the_hub_derives_its_secret() {
        let issuer = Secret::new("issuer key");
        let token = issue(&claims(), &issuer);
        assert!(token.starts_with(PREFIX), "{token}");
        let (key_id, secret, read) = credentials(&token).unwrap();
        assert_eq!(read, claims());
        assert_eq!(super::claims(&key_id).unwrap(), claims());
        assert_eq!(super::secret(&key_id, &issuer), secret);
        assert_ne!(super::secret(&key_id, &Secret::new("another key")), secret);
        // Presented whole: its signature checks out with its issuer only, for its claims only.
        assert!(signed_by(&key_id, &secret, &issuer));
        assert!(!signed_by(&key_id, &secret, &Secret::new("another key")));
        let other = issue(&Claims { exp: 1, ..claims() }, &issuer);
        let (other_id, _, _) = credentials(&other).unwrap();
        assert!(!signed_by(&other_id, &secret, &issuer));
    }

    #[test]
    fn malformed_tokens_are_named() {
        for bad in ["", "th1.", "abc.def", "th1.!!!.x", "th1.e30.AAAA"] {
            let err = credentials(bad).unwrap_err().to_string();
            assert!(err.starts_with("not a taskhub token"), "{bad:?}: {err}");
        }
        let token = issue(&claims(), &Secret::new("k"));
        let (key_id, _) = token.rsplit_once('.').unwrap();
        assert!(credentials(&format!("{key_id}.AAAA")).is_err());
    }

    #[test]
    fn base64url_round_trips_and_refuses_what_is_not_it() {
        for n in 0..40u8 {
            let bytes: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(unbase64url(&base64url(&bytes)).unwrap(), bytes);
        }
        assert_eq!(base64url(b"hello"), "aGVsbG8");
        assert_eq!(unbase64url("a"), None);
        assert_eq!(unbase64url("aGVsbG8="), None);
        assert_eq!(unbase64url("aGVsbG9"), None, "stray low bits");
    }
}
