#![no_main]
//! Bus envelopes as a consumer decodes them (`Delivery::decode` without the
//! JetStream metadata: the tenant header, the payload, the trace context),
//! the headers of a dead-lettered copy, and the names that become subject
//! tokens. Input: header lines (`name: value`), `0xff`, the payload.
//!
//! Properties: a decoded envelope has a valid tenant, the one its header
//! names, and a payload that re-encodes to itself; building dead-letter
//! headers never panics, whatever the reason text, and keeps the original
//! headers; a valid name always makes subjects of exactly three tokens
//! without wildcards.

use libfuzzer_sys::fuzz_target;
use mesh_bus::async_nats::{HeaderMap, HeaderName, HeaderValue};
use mesh_bus::{HEADER_DLQ_REASON, HEADER_TENANT, dead_letter_headers, decode_envelope, names};
use mesh_proto::{TaskEnvelope, TaskEvent};
use prost::Message;

fn check<T: Message + Default + PartialEq>(headers: &HeaderMap, payload: &[u8]) {
    let payload = bytes::Bytes::copy_from_slice(payload);
    assert!(decode_envelope::<T>(None, payload.clone()).is_err());
    if let Ok((message, tenant, _)) = decode_envelope::<T>(Some(headers), payload) {
        assert!(names::validate("tenant", &tenant).is_ok(), "{tenant:?}");
        assert_eq!(
            headers.get(HEADER_TENANT).map(|v| v.as_str()),
            Some(tenant.as_str())
        );
        let again = T::decode(message.encode_to_vec().as_slice()).expect("re-encodes");
        assert!(again == message, "a payload changed through encode/decode");
    }
}

fuzz_target!(|data: &[u8]| {
    let (lines, payload) = mesh_fuzz::split2(data);
    let text = String::from_utf8_lossy(lines);
    let mut headers = HeaderMap::new();
    for line in text.split('\n') {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if let (Ok(name), Ok(value)) = (
            name.trim().parse::<HeaderName>(),
            value.trim_start().parse::<HeaderValue>(),
        ) {
            headers.append(name, value);
        }
    }
    check::<TaskEnvelope>(&headers, payload);
    check::<TaskEvent>(&headers, payload);

    // The reason of a dead letter is often an error text, line breaks and all.
    let dead = dead_letter_headers(Some(&headers), "TASKS", 7, 3, &text, "tasks.acme.a");
    assert_eq!(
        dead.get(HEADER_DLQ_REASON).map(|v| v.as_str()),
        Some(names::header_value(&text).as_ref())
    );
    for (name, values) in headers.iter() {
        let name: &str = name.as_ref();
        if !name.starts_with("agentmesh-dlq-") && name != "Nats-Msg-Id" {
            assert_eq!(dead.get_all(name).count(), values.len(), "{name}");
        }
    }

    let first = text.split('\n').next().unwrap_or_default();
    if names::validate("tenant", first).is_ok() {
        for subject in [
            names::task_subject(first, first).expect("valid names"),
            names::agent_filter(first).expect("a valid name"),
        ] {
            let tokens: Vec<&str> = subject.split('.').collect();
            assert_eq!(tokens.len(), 3, "{subject}");
            assert!(
                tokens[1..]
                    .iter()
                    .filter(|t| **t != "*")
                    .all(|t| !t.is_empty() && !t.contains(['*', '>', ' '])),
                "{subject}"
            );
        }
    }
    if let Ok(subject) = names::event_subject("acme", first) {
        assert_eq!(subject.split('.').count(), 3, "{subject}");
    }
});
