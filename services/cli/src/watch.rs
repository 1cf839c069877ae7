//! `agentmesh tasks --watch`: the task list, polled every `--interval`.
//! On a terminal the screen is redrawn with the current page; otherwise
//! (a pipe, a log, `-o json`) only changes are printed, one line per task
//! that appeared or changed status, so the output is an append-only log.

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use serde_json::Value;

use crate::api::Api;
use crate::output::{self, Format};

/// The shortest poll interval accepted (the gateway rate-limits reads).
pub const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// `--interval`: `500ms`, `2s`, `1m` or bare seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let ms = mesh_spec::parse_duration_ms(text)
        .ok_or_else(|| format!("{text:?} is not a duration like 2s or 500ms"))?;
    let interval = Duration::from_millis(ms);
    if interval < MIN_INTERVAL {
        return Err(format!("must be at least {}ms", MIN_INTERVAL.as_millis()));
    }
    Ok(interval)
}

/// What was last seen of each task: its status and step count.
#[derive(Default)]
pub struct Seen(HashMap<String, (String, u64)>);

impl Seen {
    /// The tasks of `page` that are new or changed since the last call,
    /// oldest first (the page is newest first).
    pub fn changes<'a>(&mut self, page: &'a [Value]) -> Vec<&'a Value> {
        let mut changed = Vec::new();
        for task in page.iter().rev() {
            let Some(id) = task["id"].as_str() else {
                continue;
            };
            let now = (
                task["status"].as_str().unwrap_or_default().to_owned(),
                task["steps"].as_u64().unwrap_or_default(),
            );
            if self.0.get(id) != Some(&now) {
                self.0.insert(id.to_owned(), now);
                changed.push(task);
            }
        }
        changed
    }
}

/// One line of the change log: `<updated>  <id>  <agent>  <status>  steps N`.
pub fn change_line(task: &Value) -> String {
    format!(
        "{}  {}  {}  {}  steps {}",
        task["updatedAt"]
            .as_str()
            .or(task["createdAt"].as_str())
            .unwrap_or("-"),
        task["id"].as_str().unwrap_or_default(),
        task["agent"].as_str().unwrap_or_default(),
        task["status"].as_str().unwrap_or_default(),
        task["steps"].as_u64().unwrap_or_default(),
    )
}

/// One redraw of the terminal: a header, then the page as `agentmesh tasks`
/// prints it.
pub fn frame(tasks: &[Value], interval: Duration, error: Option<&str>) -> String {
    let mut out = format!(
        "every {}: agentmesh tasks (Ctrl-C quits)\n",
        crate::progress::elapsed(interval)
    );
    if let Some(error) = error {
        out.push_str(&format!("! {error}\n"));
    }
    out.push('\n');
    out.push_str(&output::task_table_text(tasks));
    out
}

/// Polls until Ctrl-C.
pub async fn run(
    api: &Api,
    query: &[(&str, String)],
    interval: Duration,
    format: Format,
) -> anyhow::Result<()> {
    let redraw = format == Format::Human && std::io::stdout().is_terminal();
    let mut seen = Seen::default();
    let mut last: Vec<Value> = Vec::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stdout = std::io::stdout();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let (tasks, error) = match api.tasks(query).await {
            Ok(page) => {
                last = page["tasks"].as_array().cloned().unwrap_or_default();
                (&last, None)
            }
            // A failed poll keeps the last page on screen and says why;
            // the next tick tries again.
            Err(e) => (&last, Some(format!("{e:#}"))),
        };
        if redraw {
            // Home, clear, draw: one write, so the screen does not flicker.
            let text = frame(tasks, interval, error.as_deref());
            write!(stdout, "\x1b[H\x1b[2J{text}")?;
        } else {
            if let Some(error) = &error {
                eprintln!("poll failed: {error}");
            }
            for task in seen.changes(tasks) {
                match format {
                    Format::Json => writeln!(stdout, "{task}")?,
                    Format::Human => writeln!(stdout, "{}", change_line(task))?,
                }
            }
        }
        stdout.flush()?;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn task(id: &str, status: &str, steps: u64) -> Value {
        json!({"id": id, "agent": "a", "status": status, "steps": steps,
               "createdAt": "2026-01-01T00:00:00Z", "updatedAt": "2026-01-01T00:00:01Z"})
    }

    #[test]
    fn only_new_and_changed_tasks_are_reported_oldest_first() {
        let mut seen = Seen::default();
        let first = [task("t2", "running", 0), task("t1", "queued", 0)];
        let ids: Vec<_> = seen
            .changes(&first)
            .iter()
            .map(|t| t["id"].clone())
            .collect();
        assert_eq!(ids, [json!("t1"), json!("t2")]);
        assert!(seen.changes(&first).is_empty(), "nothing changed");
        let second = [
            task("t3", "queued", 0),
            task("t2", "running", 1),
            task("t1", "queued", 0),
        ];
        let ids: Vec<_> = seen
            .changes(&second)
            .iter()
            .map(|t| t["id"].clone())
            .collect();
        assert_eq!(ids, [json!("t2"), json!("t3")], "a new step counts");
    }

    #[test]
    fn a_change_line_has_time_id_agent_status_and_steps() {
        assert_eq!(
            change_line(&task("t1", "succeeded", 3)),
            "2026-01-01T00:00:01Z  t1  a  succeeded  steps 3"
        );
    }

    #[test]
    fn a_frame_shows_the_interval_the_error_and_the_table() {
        let text = frame(
            &[task("t1", "running", 0)],
            Duration::from_secs(2),
            Some("502: down"),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "every 2.0s: agentmesh tasks (Ctrl-C quits)");
        assert_eq!(lines[1], "! 502: down");
        assert!(lines[3].starts_with("ID "), "{text}");
        assert!(lines[4].starts_with("t1 ") && lines[4].contains("running"));
    }

    #[test]
    fn intervals_are_durations_with_a_floor() {
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_interval("50ms")
                .unwrap_err()
                .contains("at least 200ms")
        );
        assert!(parse_interval("soon").is_err());
    }
}
