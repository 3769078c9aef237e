//! The only place text frames become typed messages and typed messages become text.
//!
//! Decoding enforces the size limit before parsing and turns every failure into a [`DecodeError`]
//! that carries the request id (when the frame had a readable one), an [`ErrorCode`] and a message
//! naming the problem, ready to send back to the peer.

use serde::Deserialize;

use crate::protocol::{ClientMsg, ErrorCode, ServerMsg};

/// A frame that could not be decoded. Answer the peer with [`DecodeError::to_reply`]; the session
/// stays usable unless the code says otherwise.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct DecodeError {
    pub req: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    pub fn to_reply(&self) -> ServerMsg {
        ServerMsg::error(self.req, self.code, self.message.clone())
    }
}

/// Only read on the error path, to say *which* request failed and why.
#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "type")]
    ty: Option<serde_json::Value>,
    req: Option<serde_json::Value>,
}

const KNOWN_CLIENT_TYPES: &[&str] = &[
    "auth",
    "put",
    "get",
    "consume",
    "ack",
    "fail",
    "release",
    "touch",
    "publish",
    "subscribe",
    "unsubscribe",
    "stats",
];

/// Decode a client frame of at most `max_bytes`.
pub fn decode_client(text: &str, max_bytes: usize) -> Result<ClientMsg, DecodeError> {
    if text.len() > max_bytes {
        return Err(DecodeError {
            req: None,
            code: ErrorCode::TooLarge,
            message: format!(
                "message is {} bytes; this hub accepts at most {max_bytes}",
                text.len()
            ),
        });
    }
    serde_json::from_str(text).map_err(|e| explain(text, e))
}

fn explain(text: &str, err: serde_json::Error) -> DecodeError {
    let probe: Probe = match serde_json::from_str(text) {
        Ok(p) => p,
        Err(_) => {
            return DecodeError {
                req: None,
                code: ErrorCode::BadFrame,
                message: format!("frame is not a JSON object: {err}"),
            };
        }
    };
    let req = probe.req.as_ref().and_then(|r| r.as_u64());
    if probe.req.is_some() && req.is_none() {
        return DecodeError {
            req: None,
            code: ErrorCode::BadRequest,
            message: "`req` must be a non-negative integer".into(),
        };
    }
    match probe.ty {
        None => DecodeError {
            req,
            code: ErrorCode::BadFrame,
            message: "frame has no \"type\" field".into(),
        },
        Some(serde_json::Value::String(t)) if !KNOWN_CLIENT_TYPES.contains(&t.as_str()) => {
            DecodeError {
                req,
                code: ErrorCode::UnknownType,
                message: format!(
                    "unknown message type {t:?}; known types are {}",
                    KNOWN_CLIENT_TYPES.join(", ")
                ),
            }
        }
        Some(serde_json::Value::String(t)) => DecodeError {
            req,
            code: ErrorCode::BadRequest,
            message: format!("bad {t:?} message: {err}"),
        },
        Some(_) => DecodeError {
            req,
            code: ErrorCode::BadFrame,
            message: "\"type\" must be a string".into(),
        },
    }
}

/// Decode a hub frame (clients use this). No size limit: the transport enforces one.
pub fn decode_server(text: &str) -> Result<ServerMsg, DecodeError> {
    serde_json::from_str(text).map_err(|e| DecodeError {
        req: None,
        code: ErrorCode::BadFrame,
        message: format!("unreadable message from hub: {e}"),
    })
}

/// Encode a client message as a text frame.
pub fn encode_client(msg: &ClientMsg) -> String {
    // Serialising these types cannot fail: every map key is a string and no impl returns errors.
    serde_json::to_string(msg).unwrap_or_default()
}

/// Encode a hub message as a text frame.
pub fn encode_server(msg: &ServerMsg) -> String {
    serde_json::to_string(msg).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::QueueName;
    use serde_json::json;

    #[test]
    fn put_round_trips_and_matches_the_documented_json() {
        let msg = ClientMsg::Put {
            req: Some(7),
            queue: QueueName::new("tasks").unwrap(),
            payload: json!(3411),
            kind: Some("square".into()),
            reply_to: Some(QueueName::new("results").unwrap()),
            max_attempts: None,
        };
        let text = encode_client(&msg);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            json!({"type":"put","req":7,"queue":"tasks","payload":3411,"kind":"square","reply_to":"results"})
        );
        assert_eq!(decode_client(&text, 1 << 20).unwrap(), msg);
    }

    #[test]
    fn errors_name_the_problem_and_keep_the_req() {
        let e = decode_client("{not json", 1024).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadFrame);

        let e = decode_client(r#"{"type":"frobnicate","req":3}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::UnknownType, Some(3)));
        assert!(e.message.contains("frobnicate"));

        let e = decode_client(r#"{"type":"put","req":4,"payload":1}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(4)));
        assert!(e.message.contains("queue"), "{}", e.message);

        let e =
            decode_client(r#"{"type":"put","req":5,"queue":"a b","payload":1}"#, 1024).unwrap_err();
        assert_eq!((e.code, e.req), (ErrorCode::BadRequest, Some(5)));
        assert!(e.message.contains("a b"), "{}", e.message);

        let big = format!(
            r#"{{"type":"put","queue":"q","payload":"{}"}}"#,
            "x".repeat(100)
        );
        assert_eq!(
            decode_client(&big, 64).unwrap_err().code,
            ErrorCode::TooLarge
        );
    }

    #[test]
    fn server_messages_round_trip() {
        let msg = ServerMsg::error(Some(1), ErrorCode::QueueFull, "queue tasks is full");
        let text = encode_server(&msg);
        assert!(text.contains(r#""code":"queue_full""#), "{text}");
        assert_eq!(decode_server(&text).unwrap(), msg);
    }
}
