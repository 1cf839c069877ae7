//! Scripted agents: a test writes, in its agent's system prompt, what the
//! "model" answers at each turn of the tool loop, so every path of the
//! loop (tool calls, parallel calls, final answers, memory) has a
//! deterministic test without a real model.
//!
//! The system message holds the marker line and a JSON array of turns after
//! it. The turn played is the number of assistant messages after the last
//! user message (stateless: a retried or resumed conversation replays the
//! same turn). Past the end, the last turn repeats.
//!
//! ```text
//! [[agentmesh-sim-script]]
//! [{"tool_calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]},
//!  {"content": "the tool said {{tool_results}}"}]
//! ```
//!
//! Content templates: `{{tool_results}}` (the tool messages since the last
//! assistant message, joined by ` | `), `{{previous_user}}` (the user
//! message before the last one, from session memory), `{{user_turns}}` (the
//! number of user messages), `{{input}}` (the last user message).

use serde::Deserialize;
use serde_json::Value;

use crate::openai::Message;

pub const MARKER: &str = "[[agentmesh-sim-script]]";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Turn {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ScriptedCall>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptedCall {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// What the script answers at this point of the conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub content: String,
    /// `(name, arguments as JSON text)`.
    pub tool_calls: Vec<(String, String)>,
}

fn text(message: &Message) -> String {
    message
        .content
        .as_ref()
        .map(|c| c.text())
        .unwrap_or_default()
}

/// The script's reply, if the conversation carries a script.
pub fn reply(messages: &[Message]) -> Option<Reply> {
    let script = messages
        .iter()
        .filter(|m| m.role == "system" || m.role == "developer")
        .find_map(|m| {
            let text = text(m);
            text.find(MARKER)
                .map(|at| text[at + MARKER.len()..].trim().to_owned())
        })?;
    let turns: Vec<Turn> = match serde_json::from_str(&script) {
        Ok(turns) => turns,
        Err(e) => {
            return Some(Reply {
                content: format!("script error: {e}"),
                tool_calls: Vec::new(),
            });
        }
    };
    let last_user = messages.iter().rposition(|m| m.role == "user").unwrap_or(0);
    let turn_index = messages[last_user..]
        .iter()
        .filter(|m| m.role == "assistant")
        .count();
    let turn = turns.get(turn_index).or(turns.last())?;
    let last_assistant = messages.iter().rposition(|m| m.role == "assistant");
    let tool_results: Vec<String> = messages
        .iter()
        .enumerate()
        .filter(|(i, m)| m.role == "tool" && last_assistant.is_none_or(|a| *i > a))
        .map(|(_, m)| text(m))
        .collect();
    let users: Vec<&Message> = messages.iter().filter(|m| m.role == "user").collect();
    let previous_user = users
        .len()
        .checked_sub(2)
        .map(|i| text(users[i]))
        .unwrap_or_default();
    let content = turn
        .content
        .clone()
        .unwrap_or_default()
        .replace("{{tool_results}}", &tool_results.join(" | "))
        .replace("{{previous_user}}", &previous_user)
        .replace("{{user_turns}}", &users.len().to_string())
        .replace(
            "{{input}}",
            &users.last().map(|m| text(m)).unwrap_or_default(),
        );
    Some(Reply {
        content,
        tool_calls: turn
            .tool_calls
            .iter()
            .map(|c| {
                let arguments = match &c.arguments {
                    Value::Null => "{}".to_owned(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (c.name.clone(), arguments)
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(json: &str) -> Vec<Message> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn turns_follow_the_conversation() {
        let system = format!(
            r#"{{"role":"system","content":"be brief\n{MARKER}\n[{{\"tool_calls\":[{{\"name\":\"add\",\"arguments\":{{\"a\":1}}}},{{\"name\":\"mul\"}}]}},{{\"content\":\"got {{{{tool_results}}}} after {{{{previous_user}}}}\"}}]"}}"#
        );
        let first = messages(&format!(
            r#"[{system},{{"role":"user","content":"hi"}},{{"role":"assistant","content":"x"}},{{"role":"user","content":"go"}}]"#
        ));
        let reply = reply(&first).unwrap();
        assert_eq!(
            reply.tool_calls,
            vec![
                ("add".into(), r#"{"a":1}"#.into()),
                ("mul".into(), "{}".into())
            ]
        );
        let second = messages(&format!(
            r#"[{system},{{"role":"user","content":"hi"}},{{"role":"assistant","content":"x"}},{{"role":"user","content":"go"}},{{"role":"assistant","content":null,"tool_calls":[]}},{{"role":"tool","content":"3"}},{{"role":"tool","content":"0"}}]"#
        ));
        assert_eq!(super::reply(&second).unwrap().content, "got 3 | 0 after hi");
        assert!(super::reply(&messages(r#"[{"role":"user","content":"plain"}]"#)).is_none());
    }
}
