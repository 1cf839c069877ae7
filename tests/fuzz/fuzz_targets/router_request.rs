#![no_main]
//! What the inference-router reads from an OpenAI chat request body before
//! dispatch: the token estimate reserved against the tenant's limit, and
//! whether and under which key the answer is cached.
//!
//! Properties: the estimate never overflows and covers the prompt
//! estimate; the cache key ignores the order of object keys and the `user`
//! field, but not the tenant or the model.

use inference_router::fuzzing::{cache_key, deterministic, estimate_tokens, prompt_estimate};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// The same JSON with every object's keys in reverse order.
fn reordered(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = serde_json::Map::new();
            let mut entries: Vec<_> = map.iter().collect();
            entries.reverse();
            for (k, v) in entries {
                out.insert(k.clone(), reordered(v));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(reordered).collect()),
        other => other.clone(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    for default_max in [0, 1024, u64::MAX] {
        let estimate = estimate_tokens(&body, data.len(), default_max);
        assert!(estimate >= prompt_estimate(data.len()));
    }
    let _ = deterministic(&body);
    let key = cache_key("acme", "m", &body);
    assert_eq!(key, cache_key("acme", "m", &reordered(&body)));
    assert_ne!(key, cache_key("other", "m", &body));
    assert_ne!(key, cache_key("acme", "m2", &body));
    if let Value::Object(map) = &body {
        let mut with_user = map.clone();
        with_user.insert("user".to_owned(), Value::String("someone".to_owned()));
        assert_eq!(key, cache_key("acme", "m", &Value::Object(with_user)));
    }
});
