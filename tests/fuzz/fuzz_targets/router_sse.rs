#![no_main]
//! Upstream model-server SSE streams as the inference-router relays them:
//! the gRPC face (events parsed into chunks for the workers), the HTTP face
//! (bytes passed through, an error event appended when the stream ends
//! before `data: [DONE]`), the usage tap that counts tokens on the way, and
//! the replay of a cached stream. Input: cut lengths, `0xff`, the stream.
//!
//! Properties: the gRPC relay ends with exactly one UNAVAILABLE error when
//! the stream has no `[DONE]` event, and with none when it does; the HTTP
//! face passes the bytes through unchanged and agrees with the gRPC face on
//! whether the stream sent its `[DONE]` event (the gRPC face also fails on
//! an error event or a malformed chunk, which the HTTP face passes on);
//! the usage tap counts the same however the bytes are cut; a replayed
//! stream is the stored one, event by event.

use inference_router::fuzzing::{UsageTap, guard_sse, relay_sse, replay_events};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (cuts, body) = mesh_fuzz::split2(data);
    let chunks = mesh_fuzz::chunks(body, cuts);

    let relayed = relay_sse(chunks.clone());
    let errors = relayed.iter().filter(|item| item.is_err()).count();
    assert!(errors <= 1, "{errors} errors in one relay");
    let failed = matches!(relayed.last(), Some(Err(_)));
    if let Some(Err((code, _))) = relayed.last() {
        assert_eq!(format!("{code:?}"), "Unavailable");
    }
    assert_eq!(errors == 1, failed, "an error that is not the last item");

    let passed = guard_sse(chunks.clone());
    assert!(passed.starts_with(body), "the HTTP face changed the bytes");
    let appended = &passed[body.len()..];
    if !appended.is_empty() {
        assert!(
            appended.starts_with(b"event: error\ndata: "),
            "{appended:?}"
        );
    }
    let why = match relayed.last() {
        Some(Err((_, message))) => Some(message.as_str()),
        _ => None,
    };
    let stream = String::from_utf8_lossy(body);
    match (why, appended.is_empty()) {
        (None, false) => panic!("the gRPC face completed {stream:?}, the HTTP face did not"),
        (Some(why), true) if why.contains("ended before [DONE]") => {
            panic!("the HTTP face completed {stream:?}, the gRPC face did not: {why}")
        }
        _ => {}
    }

    let mut whole = UsageTap::new(10);
    whole.feed_sse(body);
    let mut cut = UsageTap::new(10);
    for chunk in &chunks {
        cut.feed_sse(chunk);
    }
    assert_eq!(whole.usage(), cut.usage());
    assert_eq!(whole.used(), cut.used());

    let replayed: Vec<u8> = replay_events(body).concat();
    assert_eq!(replayed, String::from_utf8_lossy(body).as_bytes());
});
