#![no_main]
//! The Tool resource's `spec` (and an agent's inline tool) as the API
//! receives it, then a tool call's arguments as the model writes them.
//! Input: the spec JSON, `0xff`, the arguments.
//!
//! Properties: a validated spec is shown back as the same spec; its typed
//! config, stored as JSON, parses back to the same config; arguments that
//! pass the parameters schema are a JSON object; durations format and parse
//! back to the same number of milliseconds.

use libfuzzer_sys::fuzz_target;
use mesh_spec::{
    ArgumentsValidator, SpecLimits, ToolConfig, ToolSpecDoc, format_duration_ms, parse_duration_ms,
    validate_tool_spec,
};

fuzz_target!(|data: &[u8]| {
    let (spec, arguments) = mesh_fuzz::split2(data);
    if let Some(bytes) = spec.get(..8) {
        let ms = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
        assert_eq!(
            parse_duration_ms(&format_duration_ms(ms)),
            Some(ms),
            "{ms} ms"
        );
    }
    if let Ok(text) = std::str::from_utf8(spec) {
        if let Some(ms) = parse_duration_ms(text) {
            assert_eq!(
                parse_duration_ms(&format_duration_ms(ms)),
                Some(ms),
                "{text:?}"
            );
        }
    }
    let Ok(doc) = serde_json::from_slice::<ToolSpecDoc>(spec) else {
        return;
    };
    let Ok(proto) = doc.to_proto() else {
        return;
    };
    let Ok(config) = validate_tool_spec("spec", &proto, &SpecLimits::default()) else {
        return;
    };
    let stored = config.to_json();
    assert_eq!(
        ToolConfig::parse(&proto.r#type, &stored).as_ref(),
        Ok(&config),
        "the stored config {stored} parses to another config"
    );
    let shown = ToolSpecDoc::from_proto(&proto);
    let back = shown
        .to_proto()
        .unwrap_or_else(|e| panic!("the shown spec {shown:?} does not convert: {e}"));
    assert_eq!(
        back, proto,
        "a stored tool spec is shown as a different spec"
    );

    let validator = ArgumentsValidator::new(&proto.parameters_json)
        .expect("a validated spec's parameters compile");
    if let Ok(arguments) = std::str::from_utf8(arguments) {
        if let Ok(value) = validator.check(arguments) {
            assert!(
                value.is_object(),
                "accepted arguments {arguments:?} are not an object"
            );
        }
    }
});
