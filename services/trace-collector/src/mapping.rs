//! From OTLP spans to observation rows: the Langfuse observation type, the
//! GenAI usage and model, session and user, and the attributes as JSON.
//! Pure functions; the writer stores what they return.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{Span, status::StatusCode};
use serde_json::{Map, Value as Json};

/// What one span becomes, before the tenant is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservationRow {
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    pub kind: &'static str,
    pub start_ms: i64,
    /// The start as sent, in nanoseconds since the epoch (orders siblings
    /// within a millisecond).
    pub start_ns: i64,
    pub end_ms: i64,
    pub status_code: &'static str,
    pub status_message: Option<String>,
    pub level: &'static str,
    pub model: Option<String>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub agent: Option<String>,
    pub session_id: Option<String>,
    pub user_id: Option<String>,
    pub attributes: Json,
    /// When the first token arrived (Langfuse's `completionStartTime`), ms
    /// since the epoch.
    pub completion_start_ms: Option<i64>,
    /// The prompt (or tool arguments) and the completion (or tool result),
    /// where the sender recorded them.
    pub input: Option<Json>,
    pub output: Option<Json>,
    /// Filled by the writer from the price table (generations only).
    pub cost: Option<crate::prices::Cost>,
}

/// Attributes holding an observation's input, in the order Langfuse reads
/// them: its own, the GenAI semantic conventions (messages, then the older
/// prompt attribute), OpenInference, then a tool call's arguments.
const INPUT_KEYS: [&str; 5] = [
    "langfuse.observation.input",
    "gen_ai.input.messages",
    "gen_ai.prompt",
    "input.value",
    "gen_ai.tool.call.arguments",
];

/// The same for the output (completion, or a tool call's result).
const OUTPUT_KEYS: [&str; 5] = [
    "langfuse.observation.output",
    "gen_ai.output.messages",
    "gen_ai.completion",
    "output.value",
    "gen_ai.tool.call.result",
];

/// When the first token arrived: an RFC 3339 time, as the Langfuse SDKs
/// (JSON-quoted) and the agentmesh worker (bare) send it.
const COMPLETION_START_KEY: &str = "langfuse.observation.completion_start_time";

/// The GenAI conventions' time to first chunk: seconds after the span's
/// start (read first: one clock with the start, no rounding to ms twice).
const TIME_TO_FIRST_CHUNK_KEY: &str = "gen_ai.response.time_to_first_chunk";

/// Observation types Langfuse knows; `langfuse.observation.type` must be one.
const TYPES: [&str; 10] = [
    "span",
    "generation",
    "event",
    "agent",
    "tool",
    "chain",
    "retriever",
    "evaluator",
    "embedding",
    "guardrail",
];

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// An attribute value as JSON (OTLP's `AnyValue`, unwrapped).
pub fn any_to_json(value: &AnyValue) -> Json {
    match &value.value {
        None => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map(Json::Number)
            .unwrap_or(Json::Null),
        Some(Value::ArrayValue(a)) => Json::Array(a.values.iter().map(any_to_json).collect()),
        Some(Value::KvlistValue(kv)) => attributes_to_json(&kv.values),
        Some(Value::BytesValue(b)) => Json::String(hex(b)),
        // A string-table index (profiles only); meaningless without the table.
        Some(Value::StringValueStrindex(i)) => Json::from(*i),
    }
}

pub fn attributes_to_json(attributes: &[KeyValue]) -> Json {
    let mut map = Map::new();
    for kv in attributes {
        let value = kv.value.as_ref().map(any_to_json).unwrap_or(Json::Null);
        map.insert(kv.key.clone(), value);
    }
    Json::Object(map)
}

fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

fn string_attr(attributes: &[KeyValue], keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| match find(attributes, key)?.value.as_ref()? {
            Value::StringValue(s) if !s.is_empty() => Some(s.clone()),
            Value::IntValue(i) => Some(i.to_string()),
            _ => None,
        })
}

fn int_attr(attributes: &[KeyValue], keys: &[&str]) -> Option<i64> {
    keys.iter()
        .find_map(|key| match find(attributes, key)?.value.as_ref()? {
            Value::IntValue(i) => Some(*i),
            // Whole numbers only: a token count is never fractional.
            #[allow(clippy::cast_possible_truncation)]
            Value::DoubleValue(d) if d.is_finite() && d.fract() == 0.0 => Some(*d as i64),
            Value::StringValue(s) => s.trim().parse().ok(),
            _ => None,
        })
}

/// Token counts from Langfuse's `langfuse.observation.usage_details` (a
/// JSON object as a string, as the Langfuse SDK v3 sends it): `input` and
/// `output`, or the OpenAI and GenAI spellings.
fn langfuse_usage(attributes: &[KeyValue]) -> (Option<i64>, Option<i64>) {
    let Some(details) = string_attr(attributes, &["langfuse.observation.usage_details"])
        .and_then(|text| serde_json::from_str::<Map<String, Json>>(&text).ok())
    else {
        return (None, None);
    };
    let count = |keys: &[&str]| keys.iter().find_map(|k| details.get(*k)?.as_i64());
    (
        count(&["input", "input_tokens", "prompt_tokens"]),
        count(&["output", "output_tokens", "completion_tokens"]),
    )
}

/// Content (a prompt, a completion) as JSON: text that parses as JSON (what
/// the conventions send: messages as a JSON array) is stored parsed,
/// anything else as a string.
fn content(attributes: &[KeyValue], keys: &[&str]) -> Option<Json> {
    keys.iter().find_map(|key| {
        let value = find(attributes, key)?;
        match value.value.as_ref()? {
            Value::StringValue(s) if s.is_empty() => None,
            Value::StringValue(s) => {
                Some(serde_json::from_str(s).unwrap_or_else(|_| Json::String(s.clone())))
            }
            _ => Some(any_to_json(value)),
        }
    })
}

/// When the first token arrived, ms since the epoch: the span's start plus
/// [`TIME_TO_FIRST_CHUNK_KEY`], else [`COMPLETION_START_KEY`], where valid.
fn completion_start_ms(span: &Span) -> Option<i64> {
    let attributes = &span.attributes;
    let seconds = match find(attributes, TIME_TO_FIRST_CHUNK_KEY).and_then(|v| v.value.as_ref()) {
        Some(Value::DoubleValue(d)) => Some(*d),
        #[allow(clippy::cast_precision_loss)]
        Some(Value::IntValue(i)) => Some(*i as f64),
        _ => None,
    };
    if let Some(seconds) = seconds.filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9) {
        // Bounded above, so the product fits; whole nanoseconds suffice.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let nanos = (seconds * 1e9) as u64;
        return Some(nanos_to_ms(span.start_time_unix_nano.saturating_add(nanos)));
    }
    let Value::StringValue(text) = find(attributes, COMPLETION_START_KEY)?.value.as_ref()? else {
        return None;
    };
    let text = text.trim();
    let unquoted = serde_json::from_str::<String>(text).unwrap_or_else(|_| text.to_owned());
    chrono::DateTime::parse_from_rfc3339(&unquoted)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// The Langfuse observation type, in the order Langfuse documents:
/// `langfuse.observation.type`, then `gen_ai.operation.name`, then tool
/// attributes, then model attributes, else `span`.
pub fn observation_type(attributes: &[KeyValue]) -> &'static str {
    if let Some(explicit) = string_attr(attributes, &["langfuse.observation.type"])
        && let Some(known) = TYPES.iter().find(|t| **t == explicit.to_ascii_lowercase())
    {
        return known;
    }
    if let Some(operation) = string_attr(attributes, &["gen_ai.operation.name"]) {
        match operation.as_str() {
            "chat" | "text_completion" | "generate_content" => return "generation",
            "embeddings" => return "embedding",
            "execute_tool" => return "tool",
            "invoke_agent" | "create_agent" => return "agent",
            "retrieval" => return "retriever",
            _ => {}
        }
    }
    if string_attr(attributes, &["gen_ai.tool.name", "gen_ai.tool.call.id"]).is_some() {
        return "tool";
    }
    if string_attr(
        attributes,
        &["gen_ai.request.model", "gen_ai.response.model"],
    )
    .is_some()
    {
        return "generation";
    }
    "span"
}

fn nanos_to_ms(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// Maps one (already validated) span; `resource` holds the attributes of
/// the resource that emitted it.
pub fn map_span(span: &Span, resource: &[KeyValue], scope: &str) -> ObservationRow {
    let attrs = &span.attributes;
    let start_ms = nanos_to_ms(span.start_time_unix_nano);
    let end_ms = if span.end_time_unix_nano == 0 {
        start_ms
    } else {
        nanos_to_ms(span.end_time_unix_nano).max(start_ms)
    };
    let (status_code, status_message) = match &span.status {
        Some(status) => {
            let code = match StatusCode::try_from(status.code) {
                Ok(StatusCode::Ok) => "ok",
                Ok(StatusCode::Error) => "error",
                _ => "unset",
            };
            let message = Some(status.message.clone()).filter(|m| !m.is_empty());
            (code, message)
        }
        None => ("unset", None),
    };
    let lookup = |keys: &[&str]| string_attr(attrs, keys).or_else(|| string_attr(resource, keys));
    let (langfuse_input, langfuse_output) = langfuse_usage(attrs);
    let input = content(attrs, &INPUT_KEYS);
    let output = content(attrs, &OUTPUT_KEYS);
    // Content is kept once, in `input` and `output`, not again among the
    // attributes (it is most of a span's size where it is recorded).
    let mut span_attributes = attributes_to_json(attrs);
    if let Json::Object(map) = &mut span_attributes {
        for key in INPUT_KEYS.iter().chain(&OUTPUT_KEYS) {
            map.remove(*key);
        }
    }
    let mut attributes = Map::new();
    attributes.insert("attributes".to_owned(), span_attributes);
    attributes.insert("resource".to_owned(), attributes_to_json(resource));
    if !scope.is_empty() {
        attributes.insert("scope".to_owned(), Json::String(scope.to_owned()));
    }
    ObservationRow {
        trace_id: hex(&span.trace_id),
        span_id: hex(&span.span_id),
        parent_span_id: hex(&span.parent_span_id),
        name: span.name.clone(),
        kind: observation_type(attrs),
        start_ms,
        start_ns: i64::try_from(span.start_time_unix_nano).unwrap_or(i64::MAX),
        end_ms,
        status_code,
        status_message,
        level: if status_code == "error" {
            "ERROR"
        } else {
            match string_attr(attrs, &["langfuse.observation.level"]).as_deref() {
                Some("ERROR") => "ERROR",
                Some("WARNING") => "WARNING",
                Some("DEBUG") => "DEBUG",
                _ => "DEFAULT",
            }
        },
        model: string_attr(
            attrs,
            &[
                "gen_ai.response.model",
                "gen_ai.request.model",
                "langfuse.observation.model.name",
            ],
        ),
        input_tokens: int_attr(
            attrs,
            &["gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens"],
        )
        .or(langfuse_input)
        .unwrap_or(0)
        .max(0),
        output_tokens: int_attr(
            attrs,
            &[
                "gen_ai.usage.output_tokens",
                "gen_ai.usage.completion_tokens",
            ],
        )
        .or(langfuse_output)
        .unwrap_or(0)
        .max(0),
        agent: lookup(&["gen_ai.agent.name"]),
        session_id: lookup(&[
            "langfuse.session.id",
            "session.id",
            "gen_ai.conversation.id",
        ]),
        user_id: lookup(&["langfuse.user.id", "user.id", "enduser.id"]),
        attributes: Json::Object(attributes),
        completion_start_ms: completion_start_ms(span),
        input,
        output,
        cost: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn s(key: &str, value: &str) -> KeyValue {
        kv(key, Value::StringValue(value.to_owned()))
    }

    #[test]
    fn types_follow_the_langfuse_order() {
        assert_eq!(observation_type(&[]), "span");
        assert_eq!(
            observation_type(&[s("gen_ai.request.model", "m")]),
            "generation"
        );
        assert_eq!(observation_type(&[s("gen_ai.tool.name", "search")]), "tool");
        assert_eq!(
            observation_type(&[
                s("gen_ai.operation.name", "embeddings"),
                s("gen_ai.request.model", "m")
            ]),
            "embedding"
        );
        assert_eq!(
            observation_type(&[s("gen_ai.operation.name", "invoke_agent")]),
            "agent"
        );
        // The explicit type wins over everything; an unknown one is ignored.
        assert_eq!(
            observation_type(&[
                s("langfuse.observation.type", "retriever"),
                s("gen_ai.operation.name", "chat")
            ]),
            "retriever"
        );
        assert_eq!(
            observation_type(&[
                s("langfuse.observation.type", "bogus"),
                s("gen_ai.operation.name", "execute_tool")
            ]),
            "tool"
        );
        // An unknown operation falls through to the tool and model rules.
        assert_eq!(
            observation_type(&[
                s("gen_ai.operation.name", "other"),
                s("gen_ai.request.model", "m")
            ]),
            "generation"
        );
    }

    #[test]
    fn maps_usage_model_status_and_times() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![0xab; 8],
            parent_span_id: vec![],
            name: "chat smollm2".to_owned(),
            start_time_unix_nano: 2_000_000_000,
            end_time_unix_nano: 2_250_000_000,
            attributes: vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.request.model", "smollm2"),
                kv("gen_ai.usage.input_tokens", Value::IntValue(12)),
                s("gen_ai.usage.output_tokens", "7"),
            ],
            status: Some(Status {
                message: "boom".to_owned(),
                code: StatusCode::Error as i32,
            }),
            ..Default::default()
        };
        let row = map_span(&span, &[s("session.id", "s-1")], "scope");
        assert_eq!(row.trace_id, "01".repeat(16));
        assert_eq!(row.span_id, "ab".repeat(8));
        assert_eq!(row.parent_span_id, "");
        assert_eq!(row.kind, "generation");
        assert_eq!((row.start_ms, row.end_ms), (2000, 2250));
        assert_eq!((row.input_tokens, row.output_tokens), (12, 7));
        assert_eq!(row.model.as_deref(), Some("smollm2"));
        assert_eq!(row.level, "ERROR");
        assert_eq!(row.status_message.as_deref(), Some("boom"));
        assert_eq!(row.session_id.as_deref(), Some("s-1"));
        assert_eq!(row.agent, None);
        assert_eq!(
            row.attributes["attributes"]["gen_ai.usage.input_tokens"],
            12
        );
    }

    /// What the Langfuse Python SDK v3 sends for a generation: the model
    /// and usage only in its own attributes (usage as a JSON string).
    #[test]
    fn maps_langfuse_model_usage_and_level() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![0xab; 8],
            name: "llm-call".to_owned(),
            attributes: vec![
                s("langfuse.observation.type", "generation"),
                s("langfuse.observation.model.name", "gpt-4o"),
                s(
                    "langfuse.observation.usage_details",
                    r#"{"input": 21, "output": 8}"#,
                ),
                s("langfuse.observation.level", "WARNING"),
            ],
            ..Default::default()
        };
        let row = map_span(&span, &[], "langfuse-sdk");
        assert_eq!(row.kind, "generation");
        assert_eq!(row.model.as_deref(), Some("gpt-4o"));
        assert_eq!((row.input_tokens, row.output_tokens), (21, 8));
        assert_eq!(row.level, "WARNING");
        // GenAI attributes win where both are present; junk usage is none.
        let mut both = span.clone();
        both.attributes
            .push(kv("gen_ai.usage.input_tokens", Value::IntValue(3)));
        both.attributes[2] = s("langfuse.observation.usage_details", "not json");
        let row = map_span(&both, &[], "");
        assert_eq!((row.input_tokens, row.output_tokens), (3, 0));
    }

    /// Prompt and completion (GenAI messages, Langfuse's own input winning
    /// over them), a tool call's arguments and result, and the time of the
    /// first token, bare or JSON-quoted as the Langfuse SDK sends it.
    #[test]
    fn maps_content_and_completion_start() {
        let messages = r#"[{"role":"user","parts":[{"type":"text","content":"hi"}]}]"#;
        let span = Span {
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_500_000_000,
            attributes: vec![
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.input.messages", messages),
                s("gen_ai.output.messages", "not json"),
                s(COMPLETION_START_KEY, "2023-11-14T22:13:20.125+00:00"),
            ],
            ..Default::default()
        };
        let row = map_span(&span, &[], "");
        assert_eq!(row.input.as_ref().unwrap()[0]["parts"][0]["content"], "hi");
        assert_eq!(row.output, Some(Json::String("not json".to_owned())));
        assert_eq!(row.completion_start_ms, Some(1_700_000_000_125));
        // Kept once: not again among the attributes.
        assert!(
            row.attributes["attributes"]
                .get("gen_ai.input.messages")
                .is_none()
        );
        assert_eq!(
            row.attributes["attributes"]["gen_ai.operation.name"],
            "chat"
        );

        let mut langfuse = span.clone();
        langfuse.attributes = vec![
            s("langfuse.observation.input", r#"{"q":1}"#),
            s("gen_ai.input.messages", messages),
            s(COMPLETION_START_KEY, r#""2023-11-14T22:13:20.250Z""#),
        ];
        let row = map_span(&langfuse, &[], "");
        assert_eq!(row.input, Some(serde_json::json!({"q": 1})));
        assert_eq!(row.output, None);
        assert_eq!(row.completion_start_ms, Some(1_700_000_000_250));

        let tool = Span {
            attributes: vec![
                s("gen_ai.operation.name", "execute_tool"),
                s("gen_ai.tool.call.arguments", r#"{"city":"Paris"}"#),
                s("gen_ai.tool.call.result", "sunny"),
                s(COMPLETION_START_KEY, "yesterday"),
            ],
            ..Default::default()
        };
        let row = map_span(&tool, &[], "");
        assert_eq!(row.input, Some(serde_json::json!({"city": "Paris"})));
        assert_eq!(row.output, Some(Json::String("sunny".to_owned())));
        assert_eq!(row.completion_start_ms, None);
        // Nothing recorded, nothing stored.
        let row = map_span(&Span::default(), &[], "");
        assert_eq!((row.input, row.output), (None, None));
        // The conventions' seconds after the start win over the time.
        let mut semconv = span.clone();
        semconv
            .attributes
            .push(kv(TIME_TO_FIRST_CHUNK_KEY, Value::DoubleValue(0.0425)));
        let row = map_span(&semconv, &[], "");
        assert_eq!(row.completion_start_ms, Some(1_700_000_000_042));
    }
}
