//! The journal of a task's tool loop, read back from its own events.
//!
//! EVENTS is the journal: a completed model call is a `model_step` event, a
//! finished tool call a `tool_result` event, each published and acknowledged
//! by JetStream before the loop goes on. A redelivered task (its worker
//! crashed, or a step timed out) reads its events back and replays the
//! journaled steps instead of repeating them, so a tool is called at most
//! once per (task, step, call id) unless its result was never stored.

use std::collections::{BTreeMap, HashMap};

use mesh_proto::{ApprovalResolved, ModelStep, TaskEvent, ToolCallResult, task_event::Kind};
use prost::Message as _;

#[derive(Debug, Default)]
pub struct Journal {
    /// The first stored model call of each step.
    pub model_steps: BTreeMap<u32, ModelStep>,
    /// The first stored result of each (step, call id).
    pub results: HashMap<(u32, String), ToolCallResult>,
    /// Decisions on `human` tool calls, by call id.
    pub approvals: HashMap<String, ApprovalResolved>,
}

impl Journal {
    /// Builds the journal from a task's events in stream order; later
    /// duplicates (two attempts that raced the same step) are ignored, so
    /// every attempt replays the same history.
    pub fn from_events(payloads: impl IntoIterator<Item = bytes::Bytes>) -> Self {
        let mut journal = Self::default();
        for payload in payloads {
            let Ok(event) = TaskEvent::decode(payload) else {
                continue;
            };
            match event.kind {
                Some(Kind::ModelStep(step)) => {
                    journal.model_steps.entry(step.step).or_insert(step);
                }
                Some(Kind::ApprovalResolved(decision)) => {
                    journal
                        .approvals
                        .entry(decision.call_id.clone())
                        .or_insert(decision);
                }
                Some(Kind::ToolResult(result)) => {
                    journal
                        .results
                        .entry((result.step, result.call_id.clone()))
                        .or_insert(result);
                }
                _ => {}
            }
        }
        journal
    }

    pub fn is_empty(&self) -> bool {
        self.model_steps.is_empty() && self.results.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::ToolCall;

    fn event(kind: Kind) -> bytes::Bytes {
        TaskEvent {
            kind: Some(kind),
            ..Default::default()
        }
        .encode_to_vec()
        .into()
    }

    #[test]
    fn first_record_of_a_step_wins() {
        let first = ModelStep {
            step: 1,
            tool_calls: vec![ToolCall {
                id: "a".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let second = ModelStep {
            step: 1,
            content: "a racing attempt".into(),
            ..Default::default()
        };
        let result = |output: &str| {
            Kind::ToolResult(ToolCallResult {
                step: 1,
                call_id: "a".into(),
                output: output.into(),
                ..Default::default()
            })
        };
        let journal = Journal::from_events([
            event(Kind::ModelStep(first.clone())),
            event(result("one")),
            event(Kind::ModelStep(second)),
            event(result("two")),
            bytes::Bytes::from_static(b"\xff not an event"),
        ]);
        assert_eq!(journal.model_steps[&1], first);
        assert_eq!(journal.results[&(1, "a".to_owned())].output, "one");
    }
}
