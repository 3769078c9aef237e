//! The mutual challenge-response handshake.
//!
//! 1. The hub sends `challenge {version, nonce}`.
//! 2. The client answers `auth {key_id, client_nonce, proof}` with
//!    `proof = HMAC-SHA256(key, "taskhub-client\n" + key_id + "\n" + nonce + "\n" + client_nonce)`.
//! 3. The hub checks the proof in constant time and answers `welcome {proof, ..}` with
//!    `proof = HMAC-SHA256(key, "taskhub-hub\n" + key_id + "\n" + nonce + "\n" + client_nonce)`.
//! 4. The client checks the hub's proof, so it never talks to a hub that does not hold the key.
//!
//! The key itself never crosses the wire. Nonces and proofs are lowercase hex.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::{ClientMsg, ErrorCode, PROTOCOL_VERSION, Role, ServerMsg};

type HmacSha256 = Hmac<Sha256>;

/// Bytes in a nonce (64 hex digits on the wire).
pub const NONCE_BYTES: usize = 32;

/// Key id used when none is given.
pub const DEFAULT_KEY_ID: &str = "default";

/// A shared secret. Its `Debug` never shows the bytes, so it cannot leak through logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Secret(bytes.into())
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The hub refused the credentials (`reason` says why, when the hub said: wrong key or
    /// unknown key id, expired, revoked). Do not retry with the same credentials.
    #[error("authentication failed: {message}")]
    Rejected {
        message: String,
        reason: Option<crate::protocol::AuthFailure>,
    },
    /// The hub's proof was wrong: it does not hold our key, so it is not the hub we meant.
    #[error(
        "authentication failed: the hub could not prove it holds the key (wrong key, or not the taskhub hub you meant)"
    )]
    ImpostorHub,
    /// The peer broke the handshake protocol.
    #[error("handshake failed: {0}")]
    Protocol(String),
}

fn mac(key: &Secret, label: &str, key_id: &str, nonce: &str, client_nonce: &str) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key.expose())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for part in [label, "\n", key_id, "\n", nonce, "\n", client_nonce] {
        m.update(part.as_bytes());
    }
    m
}

/// The client's proof, lowercase hex.
pub fn client_proof(key: &Secret, key_id: &str, nonce: &str, client_nonce: &str) -> String {
    hex(&mac(key, "taskhub-client", key_id, nonce, client_nonce)
        .finalize()
        .into_bytes())
}

/// The hub's proof, lowercase hex.
pub fn hub_proof(key: &Secret, key_id: &str, nonce: &str, client_nonce: &str) -> String {
    hex(&mac(key, "taskhub-hub", key_id, nonce, client_nonce)
        .finalize()
        .into_bytes())
}

/// Check a client's proof in constant time.
pub fn verify_client_proof(
    key: &Secret,
    key_id: &str,
    nonce: &str,
    client_nonce: &str,
    proof_hex: &str,
) -> bool {
    verify(
        mac(key, "taskhub-client", key_id, nonce, client_nonce),
        proof_hex,
    )
}

fn verify(m: HmacSha256, proof_hex: &str) -> bool {
    match unhex(proof_hex) {
        Some(bytes) => m.verify_slice(&bytes).is_ok(),
        None => false,
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Bytes of a hex string, or `None` if it is not hex.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            u8::try_from(hi * 16 + lo).ok()
        })
        .collect()
}

/// Whether `s` is a well-formed nonce.
pub fn is_nonce(s: &str) -> bool {
    is_lower_hex(s, NONCE_BYTES)
}

/// Whether `s` is exactly `bytes` bytes as lowercase hex, as the protocol writes nonces and
/// proofs (uppercase is refused, so there is one spelling of each value).
pub fn is_lower_hex(s: &str, bytes: usize) -> bool {
    s.len() == bytes * 2
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The client side of the handshake, without I/O.
#[derive(Debug)]
pub struct ClientHandshake {
    key_id: String,
    key: Secret,
    client_nonce: String,
    nonce: Option<String>,
    role: Role,
    name: Option<String>,
    batch: bool,
}

impl ClientHandshake {
    /// Ask the hub to join messages that are ready together into one frame (the client reads
    /// them with [`crate::codec::decode_server_frames`]).
    pub fn batch(mut self, on: bool) -> Self {
        self.batch = on;
        self
    }

    /// `entropy` must be fresh random bytes: it becomes the client's challenge to the hub.
    pub fn new(
        key_id: impl Into<String>,
        key: Secret,
        role: Role,
        name: Option<String>,
        entropy: [u8; NONCE_BYTES],
    ) -> Self {
        ClientHandshake {
            key_id: key_id.into(),
            key,
            client_nonce: hex(&entropy),
            nonce: None,
            role,
            name,
            batch: false,
        }
    }

    /// Answer the hub's first message, which must be its `challenge`.
    pub fn answer(&mut self, msg: &ServerMsg) -> Result<ClientMsg, AuthError> {
        let nonce = match msg {
            ServerMsg::Challenge { version, nonce } => {
                if *version != PROTOCOL_VERSION {
                    return Err(AuthError::Protocol(format!(
                        "hub speaks protocol version {version}, this client speaks {PROTOCOL_VERSION}"
                    )));
                }
                if !is_nonce(nonce) {
                    return Err(AuthError::Protocol("hub sent a malformed nonce".into()));
                }
                nonce.clone()
            }
            other => return Err(unexpected(other, "challenge")),
        };
        let proof = client_proof(&self.key, &self.key_id, &nonce, &self.client_nonce);
        self.nonce = Some(nonce);
        Ok(ClientMsg::Auth {
            key_id: self.key_id.clone(),
            client_nonce: self.client_nonce.clone(),
            proof,
            role: self.role,
            name: self.name.clone(),
            batch: self.batch,
        })
    }

    /// Check the hub's answer to our `auth`: a `welcome` carrying the hub's proof.
    pub fn finish(&self, msg: &ServerMsg) -> Result<(), AuthError> {
        let Some(nonce) = &self.nonce else {
            return Err(AuthError::Protocol("welcome before challenge".into()));
        };
        match msg {
            ServerMsg::Welcome { proof, .. } => {
                let m = mac(
                    &self.key,
                    "taskhub-hub",
                    &self.key_id,
                    nonce,
                    &self.client_nonce,
                );
                if verify(m, proof) {
                    Ok(())
                } else {
                    Err(AuthError::ImpostorHub)
                }
            }
            other => Err(unexpected(other, "welcome")),
        }
    }
}

fn unexpected(msg: &ServerMsg, wanted: &str) -> AuthError {
    match msg {
        ServerMsg::Error {
            code: ErrorCode::AuthFailed,
            message,
            reason,
            ..
        } => AuthError::Rejected {
            message: message.clone(),
            reason: *reason,
        },
        ServerMsg::Error { code, message, .. } => {
            AuthError::Protocol(format!("hub refused the session: {code}: {message}"))
        }
        _ => AuthError::Protocol(format!(
            "expected {wanted} from the hub, got something else"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::{QueueName, SessionId};
    use crate::protocol::Limits;

    fn welcome(proof: String) -> ServerMsg {
        ServerMsg::Welcome {
            session: SessionId(1),
            proof,
            inbox: QueueName::inbox(SessionId(1)),
            limits: Limits {
                max_message_bytes: 1,
                ack_wait_ms: 1,
                max_prefetch: 1,
                max_attempts: 1,
                ping_interval_ms: 1,
            },
        }
    }

    #[test]
    fn both_sides_prove_the_key() {
        let key = Secret::new("s3cret");
        let nonce = hex(&[7u8; 32]);
        let mut hs = ClientHandshake::new("default", key.clone(), Role::Worker, None, [9; 32]);
        let auth = hs
            .answer(&ServerMsg::Challenge {
                version: PROTOCOL_VERSION,
                nonce: nonce.clone(),
            })
            .unwrap();
        let ClientMsg::Auth {
            key_id,
            client_nonce,
            proof,
            ..
        } = auth
        else {
            panic!("not auth")
        };
        assert!(!proof.contains("s3cret"));
        assert!(verify_client_proof(
            &key,
            &key_id,
            &nonce,
            &client_nonce,
            &proof
        ));
        assert!(!verify_client_proof(
            &Secret::new("other"),
            &key_id,
            &nonce,
            &client_nonce,
            &proof
        ));
        // A different nonce (a replayed proof) does not verify.
        assert!(!verify_client_proof(
            &key,
            &key_id,
            &hex(&[8u8; 32]),
            &client_nonce,
            &proof
        ));

        let good = hub_proof(&key, &key_id, &nonce, &client_nonce);
        assert_eq!(hs.finish(&welcome(good)), Ok(()));
        let bad = hub_proof(&Secret::new("other"), &key_id, &nonce, &client_nonce);
        assert_eq!(hs.finish(&welcome(bad)), Err(AuthError::ImpostorHub));
    }

    #[test]
    fn secrets_do_not_debug_print() {
        assert!(!format!("{:?}", Secret::new("hunter2")).contains("hunter2"));
    }

    #[test]
    fn hex_round_trips() {
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(unhex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
    }
}
