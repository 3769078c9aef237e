//! Property checks over what the core reads from peers: any text or bytes decode or are refused
//! with a short error (never a panic); messages survive encode and decode; tokens and base64url
//! read back exactly what was written; and a pattern covers another exactly when every topic the
//! second matches, the first matches too. (`fuzz/` runs the long searches on the same decoders.)

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use serde_json::json;
use taskhub_core::codec::{
    MAX_ERROR_BYTES, decode_client, decode_client_binary, decode_client_frames, encode_client,
};
use taskhub_core::{Body, ClientMsg, Pattern, Payload, QueueName, Topic, token};

const MAX: usize = 1 << 20;

fn short(e: &taskhub_core::codec::DecodeError) -> bool {
    // The limit, plus the ellipsis a clipped message ends with.
    e.message.len() <= MAX_ERROR_BYTES + '…'.len_utf8()
}

/// Text shaped like client messages: a known or unknown type and fields of any JSON kind.
fn message_like() -> impl Strategy<Value = String> {
    let ty = prop_oneof![
        Just("put"),
        Just("get"),
        Just("consume"),
        Just("ack"),
        Just("subscribe"),
        Just("create_token"),
        Just("revoke_token"),
        Just("auth"),
        Just("nope"),
    ];
    let value = prop_oneof![
        Just(json!(null)),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(|s| json!(s)),
        vec("[a-z.>*]{1,6}", 0..3).prop_map(|v| json!(v)),
        Just(json!({"consume": ["tasks"], "stats": true})),
        Just(json!({"bogus": 1})),
    ];
    let field = prop_oneof![
        Just("req"),
        Just("queue"),
        Just("queues"),
        Just("payload"),
        Just("task"),
        Just("rights"),
        Just("ttl_ms"),
        Just("token_id"),
        Just("pattern"),
        Just("prefetch"),
    ];
    (ty, vec((field, value), 0..6)).prop_map(|(ty, fields)| {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), json!(ty));
        for (k, v) in fields {
            m.insert(k.into(), v);
        }
        serde_json::Value::Object(m).to_string()
    })
}

proptest! {
    #[test]
    fn any_text_is_decoded_or_refused_in_few_words(text in prop_oneof![".{0,200}", message_like()]) {
        if let Err(e) = decode_client::<Payload>(&text, MAX) {
            prop_assert!(short(&e), "{}", e.message);
        }
        for r in decode_client_frames::<Payload>(&text, MAX) {
            if let Err(e) = r {
                prop_assert!(short(&e), "{}", e.message);
            }
        }
    }

    #[test]
    fn any_bytes_are_decoded_or_refused_as_a_binary_frame(bytes in vec(any::<u8>(), 0..200)) {
        if let Err(e) = decode_client_binary::<serde_json::Value>(&bytes, MAX) {
            prop_assert!(short(&e), "{}", e.message);
        }
    }

    #[test]
    fn puts_survive_encode_and_decode(
        queue in "[a-z][a-z0-9_:-]{0,20}",
        text in ".{0,40}",
        bytes in vec(any::<u8>(), 0..64),
        binary in any::<bool>(),
        req in any::<u64>(),
        reply in proptest::option::of("[a-z]{1,8}"),
    ) {
        let payload: Payload = if binary { Body::Bytes(Bytes::from(bytes)) } else { json!({"t": text}).into() };
        let msg = ClientMsg::Put {
            req: Some(req),
            queue: QueueName::new(queue).unwrap(),
            payload,
            kind: Some("k".into()),
            reply_to: reply.map(|r| QueueName::new(r).unwrap()),
            max_attempts: None,
            dedup_id: None,
            schedule: Default::default(),
        };
        let decoded = match encode_client(&msg) {
            taskhub_core::codec::Frame::Text(t) => decode_client::<Payload>(&t, MAX),
            taskhub_core::codec::Frame::Binary(b) => {
                decode_client_binary::<serde_json::Value>(&b, MAX)
            }
        };
        prop_assert_eq!(decoded.unwrap(), msg);
    }

    #[test]
    fn base64url_reads_back_what_it_wrote_and_only_that(bytes in vec(any::<u8>(), 0..100), text in "[A-Za-z0-9_=+/-]{0,40}") {
        prop_assert_eq!(token::unbase64url(&token::base64url(&bytes)).unwrap(), bytes);
        if let Some(read) = token::unbase64url(&text) {
            prop_assert_eq!(token::base64url(&read), text);
        }
    }

    #[test]
    fn token_text_is_read_or_refused_never_trusted_blindly(
        text in prop_oneof![".{0,120}", "th1\\.[A-Za-z0-9_-]{0,80}\\.[A-Za-z0-9_-]{0,60}"],
    ) {
        // Whatever it is, reading it must not panic, and a token that reads has a well-formed id.
        if let Ok((key_id, _, claims)) = token::credentials(&text) {
            prop_assert!(key_id.starts_with(token::PREFIX));
            prop_assert_eq!(claims.id.len(), 16);
        }
    }

    #[test]
    fn a_pattern_covers_another_exactly_when_it_matches_all_it_matches(
        a in pattern(),
        b in pattern(),
    ) {
        let universe = topics();
        let subset = universe.iter().all(|t| !b.matches(t) || a.matches(t));
        prop_assert_eq!(a.covers(&b), subset, "{} covers {}?", a, b);
    }
}

/// Patterns of up to three tokens over `a`, `b` and `*`, with an optional final `>`.
fn pattern() -> impl Strategy<Value = Pattern> {
    (
        vec(prop_oneof![Just("a"), Just("b"), Just("*")], 0..3),
        any::<bool>(),
    )
        .prop_filter_map("a pattern has a token", |(mut tokens, tail)| {
            if tail {
                tokens.push(">");
            }
            (!tokens.is_empty()).then(|| Pattern::new(tokens.join(".")).unwrap())
        })
}

/// Every topic of one to four tokens over `a`, `b` and `c` (`c` stands for any other token).
fn topics() -> Vec<Topic> {
    let mut all: Vec<String> = vec![String::new()];
    let mut out = Vec::new();
    for _ in 0..4 {
        all = all
            .iter()
            .flat_map(|p| {
                ["a", "b", "c"].map(|t| {
                    if p.is_empty() {
                        t.to_string()
                    } else {
                        format!("{p}.{t}")
                    }
                })
            })
            .collect();
        out.extend(all.iter().map(|t| Topic::new(t.as_str()).unwrap()));
    }
    out
}
