#![no_main]
//! Request bodies as the gateway decodes them (`ValidJson`): a depth check
//! that scans the bytes before serde recurses, then a typed decode whose
//! errors name the field.
//!
//! Properties: a body serde_json reads within the depth limit is accepted
//! as the same value (the scanner never over-counts, e.g. brackets in
//! strings); nothing deeper is ever accepted; every refusal is
//! INVALID_ARGUMENT naming a field, for the resource documents too.

use gateway::json::{MAX_JSON_DEPTH, parse};
use libfuzzer_sys::fuzz_target;
use mesh_runtime::ErrorCode;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let plain = serde_json::from_slice::<Value>(data);
    match parse::<Value>(data) {
        Ok(value) => {
            assert!(mesh_fuzz::depth(&value) <= MAX_JSON_DEPTH);
            assert_eq!(plain.as_ref().ok(), Some(&value));
        }
        Err(e) => {
            assert_eq!(e.code, ErrorCode::InvalidArgument);
            assert!(e.field.as_deref().is_some_and(|f| !f.is_empty()));
            if let Ok(value) = &plain {
                assert!(
                    mesh_fuzz::depth(value) > MAX_JSON_DEPTH,
                    "a body of depth {} refused: {}",
                    mesh_fuzz::depth(value),
                    e.message
                );
            }
        }
    }
    for result in [
        parse::<mesh_spec::AgentSpecDoc>(data).err(),
        parse::<mesh_spec::ToolSpecDoc>(data).err(),
    ] {
        if let Some(e) = result {
            assert_eq!(e.code, ErrorCode::InvalidArgument, "{}", e.message);
            assert!(
                e.field.as_deref().is_some_and(|f| !f.is_empty()),
                "{}",
                e.message
            );
        }
    }
});
