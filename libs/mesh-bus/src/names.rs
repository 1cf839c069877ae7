//! Names that become subject tokens or consumer names: tenants, agents,
//! collections. They follow the DNS-label rule of Kubernetes names
//! (lowercase letters, digits, `-`, 1 to 63 characters, starting and ending
//! alphanumeric), which keeps them valid NATS tokens and KEDA-safe.

use crate::BusError;

pub const MAX_NAME_LEN: usize = 63;

/// Checks a name; `kind` names it in the error (`"tenant"`, `"agent"`).
pub fn validate(kind: &'static str, value: &str) -> Result<(), BusError> {
    let reason = if value.is_empty() {
        Some("must not be empty")
    } else if value.len() > MAX_NAME_LEN {
        Some("must be at most 63 characters")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        Some("may contain only lowercase letters, digits and '-'")
    } else if value.starts_with('-') || value.ends_with('-') {
        Some("must start and end with a letter or digit")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(BusError::InvalidName {
            kind,
            value: value.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// `tasks.<tenant>.<agent>`
pub fn task_subject(tenant: &str, agent: &str) -> Result<String, BusError> {
    validate("tenant", tenant)?;
    validate("agent", agent)?;
    Ok(format!("tasks.{tenant}.{agent}"))
}

/// `events.<tenant>.<task_id>`; task ids are UUIDs, validated by the caller's
/// parse, and re-checked here to be a single token.
pub fn event_subject(tenant: &str, task_id: &str) -> Result<String, BusError> {
    validate("tenant", tenant)?;
    if task_id.is_empty() || !task_id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        return Err(BusError::InvalidName {
            kind: "task id",
            value: task_id.to_owned(),
            reason: "must be a UUID",
        });
    }
    Ok(format!("events.{tenant}.{task_id}"))
}

/// The durable consumer of an agent's tasks: `agent-<agent>` (deploy contract).
pub fn agent_consumer(agent: &str) -> Result<String, BusError> {
    validate("agent", agent)?;
    Ok(format!("agent-{agent}"))
}

/// Filter of an agent's consumer: its tasks from every tenant.
pub fn agent_filter(agent: &str) -> Result<String, BusError> {
    validate("agent", agent)?;
    Ok(format!("tasks.*.{agent}"))
}

/// Where a message from `subject` goes when it is dead-lettered:
/// `dlq.<subject>` (for example `dlq.tasks.acme.support`).
pub fn dlq_subject(subject: &str) -> String {
    format!("dlq.{subject}")
}

/// `text` as a NATS header value. The protocol ends a header line at CR or
/// LF and async-nats panics on a value holding either, yet some values come
/// from outside (a model's tool-call id inside a `Nats-Msg-Id`, an error
/// text as a dead-letter reason): those two are written escaped, as `\r`
/// and `\n`, and a backslash as `\\`, so the escaping is one-to-one (two
/// different call ids never become the same `Nats-Msg-Id`, which would
/// drop one event as a duplicate); any other text passes unchanged.
pub fn header_value(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\r', '\n', '\\']) {
        std::borrow::Cow::Owned(
            text.replace('\\', "\\\\")
                .replace('\r', "\\r")
                .replace('\n', "\\n"),
        )
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value with line breaks becomes one header line: async-nats panics
    /// on a line break in a header value.
    #[test]
    fn header_values_never_hold_line_breaks() {
        assert_eq!(header_value("task:step:1:call_7"), "task:step:1:call_7");
        assert_eq!(header_value("a\r\nb\n"), "a\\r\\nb\\n");
        // One-to-one: a line break and a literal backslash-n stay apart.
        assert_eq!(header_value("a\\nb"), "a\\\\nb");
        assert_ne!(header_value("a\nb"), header_value("a\\nb"));
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", header_value("id\nInjected: 1").as_ref());
        assert_eq!(
            headers.get("Nats-Msg-Id").unwrap().as_str(),
            "id\\nInjected: 1"
        );
    }

    #[test]
    fn accepts_dns_labels() {
        for ok in ["a", "acme", "team-7", "x".repeat(63).as_str()] {
            assert!(validate("tenant", ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn rejects_subject_metacharacters_and_bad_shapes() {
        for bad in [
            "",
            "a.b",
            "*",
            ">",
            "a b",
            "Acme",
            "-a",
            "a-",
            "é",
            &"x".repeat(64),
        ] {
            let err = validate("tenant", bad).unwrap_err();
            assert!(err.to_string().contains("tenant"), "{err}");
        }
    }

    #[test]
    fn builds_contract_subjects() {
        assert_eq!(
            task_subject("acme", "support").unwrap(),
            "tasks.acme.support"
        );
        assert_eq!(agent_consumer("support").unwrap(), "agent-support");
        assert_eq!(agent_filter("support").unwrap(), "tasks.*.support");
        let id = "0191b2c4-6a8e-7d3e-9c1f-2a3b4c5d6e7f";
        assert_eq!(
            event_subject("acme", id).unwrap(),
            format!("events.acme.{id}")
        );
        assert!(event_subject("acme", "x.>").is_err());
        assert_eq!(dlq_subject("tasks.acme.support"), "dlq.tasks.acme.support");
    }
}
