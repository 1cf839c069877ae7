//! `agentmesh trace <id>`: one trace, as the gateway's
//! `GET /v1/traces/{trace_id}` returns it, drawn as a waterfall tree: each
//! observation's name under its parent, its duration as a bar on the
//! trace's shared time axis, its tokens and cost, and errors marked (in red
//! on a colour terminal, and always with `!` and the status message so a
//! pipe or a `NO_COLOR` terminal loses nothing), and a generation's time to
//! first token where it was recorded.
//!
//! Rendering is a pure function of the JSON, so it is tested on a fixed
//! trace; it must never panic on a trace with missing fields or odd times
//! (a child that outlives its parent, spans before the trace start), and it
//! walks the tree without recursion so a deep trace cannot overflow the
//! stack.

use std::fmt::Write as _;

use serde_json::Value;

/// Layout of the waterfall.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Columns of the name column (tree guides included); longer names are
    /// cut with `…`.
    pub name_width: usize,
    /// Columns of the time axis.
    pub bar_width: usize,
    /// ANSI colours (errors red, bars dim for the unaffected).
    pub color: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            name_width: 44,
            bar_width: 40,
            color: false,
        }
    }
}

const RED: &str = "\x1b[31m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

fn int(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or(0)
}

/// `850 ms`, `1.25 s`, `2m 05s`.
pub fn duration(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.2} s", ms as f64 / 1000.0)
    } else {
        format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

/// USD with enough digits to tell small model calls apart.
pub fn cost(usd: f64) -> String {
    if usd == 0.0 {
        "-".to_owned()
    } else if usd < 0.01 {
        format!("${usd:.6}")
    } else {
        format!("${usd:.4}")
    }
}

fn tokens(input: i64, output: i64) -> String {
    if input == 0 && output == 0 {
        "-".to_owned()
    } else {
        format!("{input}/{output}")
    }
}

/// Cuts `s` to `width` characters, marking the cut.
fn fit(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The bar of `[start, end)` on the axis `[t0, t0 + span)` of `width`
/// columns: at least one column, so an instant event still shows.
fn bar(start: i64, end: i64, t0: i64, span: i64, width: usize) -> String {
    let span = span.max(1) as f64;
    let w = width as f64;
    let col = |t: i64| (((t - t0) as f64 / span) * w).clamp(0.0, w);
    let width = width.max(1);
    let from = (col(start).floor() as usize).min(width - 1);
    let to = (col(end.max(start)).ceil() as usize).clamp(from + 1, width);
    let mut out = String::with_capacity(width * 3);
    out.extend(std::iter::repeat_n(' ', from));
    out.extend(std::iter::repeat_n('█', to - from));
    out.extend(std::iter::repeat_n(' ', width - to));
    out
}

fn is_error(node: &Value) -> bool {
    node["level"].as_str() == Some("ERROR") || node["status_code"].as_str() == Some("error")
}

/// The whole view: a header with the trace's totals, then one line per
/// observation (and one more under each error with its message).
pub fn render(trace: &Value, layout: Layout) -> String {
    let observations = trace["observations"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    // The axis covers the trace and every observation in it (an orphan or
    // a late span may lie outside the trace row's own bounds).
    let mut t0 = int(trace, "start_ms");
    let mut t1 = int(trace, "end_ms");
    let mut stack: Vec<&Value> = observations.iter().collect();
    while let Some(node) = stack.pop() {
        t0 = t0.min(int(node, "start_ms"));
        t1 = t1.max(int(node, "end_ms"));
        stack.extend(node["children"].as_array().into_iter().flatten());
    }
    let span = t1 - t0;
    let paint = |text: &str, code: &str| {
        if layout.color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };

    let mut out = String::new();
    let errors = int(trace, "error_count");
    let _ = writeln!(
        out,
        "{} {}",
        paint("trace", BOLD),
        trace["trace_id"].as_str().unwrap_or("-")
    );
    let _ = writeln!(
        out,
        "name: {}  agent: {}  session: {}  user: {}",
        trace["name"].as_str().unwrap_or("-"),
        trace["agent"].as_str().unwrap_or("-"),
        trace["session_id"].as_str().unwrap_or("-"),
        trace["user_id"].as_str().unwrap_or("-"),
    );
    let summary = format!(
        "latency: {}  observations: {}  tokens: {} in / {} out  cost: {}  errors: {errors}",
        duration(int(trace, "latency_ms")),
        int(trace, "observation_count"),
        int(trace, "input_tokens"),
        int(trace, "output_tokens"),
        cost(trace["total_cost_usd"].as_f64().unwrap_or(0.0)),
    );
    let _ = writeln!(
        out,
        "{}",
        if errors > 0 {
            paint(&summary, RED)
        } else {
            summary
        }
    );
    out.push('\n');
    let axis = format!("0 … {}", duration(span));
    let _ = writeln!(
        out,
        "{:<nw$}  {:<10}  {:>9}  {:<bw$}  {:>11}  {:>10}",
        "NAME",
        "TYPE",
        "DURATION",
        axis,
        "TOKENS I/O",
        "COST",
        nw = layout.name_width,
        bw = layout.bar_width,
    );

    // Depth-first, children in the order the API gives (start time); each
    // entry carries the guide its line starts with and the prefix its
    // children continue.
    let mut stack: Vec<(&Value, String, String)> = observations
        .iter()
        .rev()
        .map(|n| (n, String::new(), String::new()))
        .collect();
    while let Some((node, guide, prefix)) = stack.pop() {
        let error = is_error(node);
        let mut name = format!("{guide}{}", node["name"].as_str().unwrap_or("?"));
        if error {
            name.push_str(" !");
        }
        let name = format!(
            "{:<w$}",
            fit(&name, layout.name_width),
            w = layout.name_width
        );
        let start = int(node, "start_ms");
        let end = int(node, "end_ms");
        let line = format!(
            "{name}  {:<10}  {:>9}  {}  {:>11}  {:>10}",
            fit(node["type"].as_str().unwrap_or("span"), 10),
            duration(end - start),
            bar(start, end, t0, span, layout.bar_width),
            tokens(int(node, "input_tokens"), int(node, "output_tokens")),
            cost(node["cost_usd"].as_f64().unwrap_or(0.0)),
        );
        let _ = writeln!(
            out,
            "{}",
            if error {
                paint(&line, RED)
            } else {
                line.trim_end().to_owned()
            }
            .trim_end()
        );
        if error {
            let message = node["status_message"]
                .as_str()
                .filter(|m| !m.is_empty())
                .unwrap_or("failed");
            let detail = format!("{prefix}   error: {message}");
            let _ = writeln!(out, "{}", paint(&detail, RED));
        }
        // A streamed generation's time to first token, where recorded.
        if let Some(ttft) = node["time_to_first_token_ms"].as_i64() {
            let _ = writeln!(out, "{prefix}   first token: {}", duration(ttft));
        }
        let children = node["children"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        for (i, child) in children.iter().enumerate().rev() {
            let last = i + 1 == children.len();
            let (branch, more) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            stack.push((
                child,
                format!("{prefix}{branch}"),
                format!("{prefix}{more}"),
            ));
        }
    }
    let scores = trace["scores"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if !scores.is_empty() {
        out.push_str("\nscores:\n");
        for score in scores {
            let value = match &score["value"] {
                Value::Null => "-".to_owned(),
                Value::String(text) => text.clone(),
                v => v.to_string(),
            };
            let on = score["observation_id"]
                .as_str()
                .map(|span| format!(" (span {span})"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} = {value}{on}",
                score["name"].as_str().unwrap_or("?"),
            );
        }
    }
    out
}

/// `agentmesh traces`: one line per trace of a `GET /v1/traces` page,
/// newest first, with the cursor of the next page.
pub fn list_table(page: &Value, now_ms: i64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<32}  {:<28}  {:<14}  {:>10}  {:>9}  {:>4}  {:>3}  {:>11}  {:>10}",
        "TRACE ID", "NAME", "AGENT", "STARTED", "LATENCY", "OBS", "ERR", "TOKENS I/O", "COST"
    );
    for t in page["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let _ = writeln!(
            out,
            "{:<32}  {:<28}  {:<14}  {:>10}  {:>9}  {:>4}  {:>3}  {:>11}  {:>10}",
            t["trace_id"].as_str().unwrap_or("-"),
            fit(t["name"].as_str().unwrap_or("-"), 28),
            fit(t["agent"].as_str().unwrap_or("-"), 14),
            format!(
                "{} ago",
                duration(now_ms - int(t, "start_ms")).replace(' ', "")
            ),
            duration(int(t, "latency_ms")),
            int(t, "observation_count"),
            int(t, "error_count"),
            tokens(int(t, "input_tokens"), int(t, "output_tokens")),
            cost(t["total_cost_usd"].as_f64().unwrap_or(0.0)),
        );
    }
    if let Some(next) = page["next_cursor"].as_str() {
        let _ = writeln!(out, "(more: --cursor {next})");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_a_page_of_traces() {
        let page = json!({
            "data": [{
                "trace_id": "0af7651916cd43dd8448eb211c80319c", "name": "invoke_agent support",
                "agent": "support", "start_ms": 1_000, "latency_ms": 2_000,
                "observation_count": 5, "error_count": 1, "input_tokens": 320,
                "output_tokens": 45, "total_cost_usd": 0.000_075,
            }, {"trace_id": "1bf7651916cd43dd8448eb211c80319c", "start_ms": 61_000}],
            "next_cursor": "1000.7",
        });
        let want = "\
TRACE ID                          NAME                          AGENT              STARTED    LATENCY   OBS  ERR   TOKENS I/O        COST
0af7651916cd43dd8448eb211c80319c  invoke_agent support          support          1m01s ago     2.00 s     5    1       320/45   $0.000075
1bf7651916cd43dd8448eb211c80319c  -                             -                1.00s ago       0 ms     0    0            -           -
(more: --cursor 1000.7)
";
        let have = list_table(&page, 62_000);
        assert_eq!(have, want, "\n{have}");
    }

    fn node(name: &str, kind: &str, start: i64, end: i64, children: Vec<Value>) -> Value {
        json!({
            "name": name, "type": kind, "start_ms": start, "end_ms": end,
            "latency_ms": end - start, "level": "DEFAULT", "status_code": "unset",
            "input_tokens": 0, "output_tokens": 0, "cost_usd": null,
            "children": children,
        })
    }

    /// An agent run of 2 s: a model call, a failing tool and a second
    /// model call, with an orphan whose parent never arrived.
    fn fixed_trace() -> Value {
        let mut chat = node("chat gpt-4o-mini", "generation", 1_000, 1_800, vec![]);
        chat["input_tokens"] = json!(120);
        chat["output_tokens"] = json!(30);
        chat["cost_usd"] = json!(0.000_036);
        let mut tool = node("execute_tool search", "tool", 1_800, 2_300, vec![]);
        tool["level"] = json!("ERROR");
        tool["status_code"] = json!("error");
        tool["status_message"] = json!("timeout after 500 ms");
        let mut chat2 = node("chat gpt-4o-mini", "generation", 2_300, 3_000, vec![]);
        chat2["input_tokens"] = json!(200);
        chat2["output_tokens"] = json!(15);
        chat2["cost_usd"] = json!(0.000_039);
        let root = node(
            "invoke_agent support",
            "agent",
            1_000,
            3_000,
            vec![chat, tool, chat2],
        );
        let orphan = node("late span", "span", 2_900, 2_900, vec![]);
        json!({
            "trace_id": "0af7651916cd43dd8448eb211c80319c",
            "name": "invoke_agent support", "agent": "support",
            "session_id": "s-1", "user_id": null,
            "start_ms": 1_000, "end_ms": 3_000, "latency_ms": 2_000,
            "observation_count": 5, "error_count": 1,
            "input_tokens": 320, "output_tokens": 45, "total_cost_usd": 0.000_075,
            "observations": [root, orphan],
            "scores": [{"name": "helpfulness", "value": 0.5}],
        })
    }

    #[test]
    fn renders_a_fixed_trace_as_a_waterfall() {
        let layout = Layout {
            name_width: 30,
            bar_width: 20,
            color: false,
        };
        let want = "\
trace 0af7651916cd43dd8448eb211c80319c
name: invoke_agent support  agent: support  session: s-1  user: -
latency: 2.00 s  observations: 5  tokens: 320 in / 45 out  cost: $0.000075  errors: 1

NAME                            TYPE         DURATION  0 … 2.00 s             TOKENS I/O        COST
invoke_agent support            agent          2.00 s  ████████████████████            -           -
├─ chat gpt-4o-mini             generation     800 ms  ████████                   120/30   $0.000036
├─ execute_tool search !        tool           500 ms          █████                   -           -
│     error: timeout after 500 ms
└─ chat gpt-4o-mini             generation     700 ms               ███████       200/15   $0.000039
late span                       span             0 ms                     █            -           -

scores:
  helpfulness = 0.5
";
        let have = render(&fixed_trace(), layout);
        assert_eq!(have, want, "\n{have}");
    }

    #[test]
    fn colour_marks_only_the_error_lines() {
        let layout = Layout {
            color: true,
            ..Layout::default()
        };
        let have = render(&fixed_trace(), layout);
        let red: Vec<&str> = have.lines().filter(|l| l.contains(RED)).collect();
        // The summary (it counts errors), the failing tool and its message.
        assert_eq!(red.len(), 3, "{have}");
        assert!(red[1].contains("execute_tool search !"), "{have}");
        assert!(red[2].contains("timeout after 500 ms"), "{have}");
        assert!(!render(&fixed_trace(), Layout::default()).contains('\x1b'));
    }

    #[test]
    fn names_are_cut_and_bars_stay_on_the_axis() {
        assert_eq!(fit("abcdef", 4), "abc…");
        assert_eq!(fit("abc", 4), "abc");
        // Outside the axis (before, after, reversed, zero-length axis):
        // always exactly `width` columns, at least one of them filled.
        for (s, e, t0, span) in [
            (-50, -10, 0, 100),
            (200, 300, 0, 100),
            (80, 20, 0, 100),
            (5, 5, 5, 0),
        ] {
            let b = bar(s, e, t0, span, 10);
            assert_eq!(b.chars().count(), 10, "{s} {e}: {b:?}");
            assert!(b.contains('█'), "{s} {e}: {b:?}");
        }
        assert_eq!(bar(0, 50, 0, 100, 10), "█████     ");
        assert_eq!(bar(50, 100, 0, 100, 10), "     █████");
    }

    #[test]
    fn a_trace_with_missing_fields_or_deep_nesting_still_renders() {
        let bare = render(&json!({}), Layout::default());
        assert!(bare.starts_with("trace -\n"), "{bare}");
        let mut deep = node("leaf", "span", 0, 1, vec![]);
        for i in 0..300 {
            deep = node(&format!("n{i}"), "span", 0, 1, vec![deep]);
        }
        let text = render(&json!({ "observations": [deep] }), Layout::default());
        assert_eq!(text.lines().filter(|l| l.contains('█')).count(), 301);
    }

    #[test]
    fn durations_and_costs_read_well() {
        assert_eq!(duration(850), "850 ms");
        assert_eq!(duration(1_250), "1.25 s");
        assert_eq!(duration(125_000), "2m 05s");
        assert_eq!(cost(0.0), "-");
        assert_eq!(cost(0.5), "$0.5000");
    }

    #[test]
    fn shows_a_generations_time_to_first_token() {
        let mut chat = node("chat m", "generation", 0, 800, vec![]);
        chat["time_to_first_token_ms"] = json!(120);
        let root = node("invoke_agent a", "agent", 0, 1_000, vec![chat]);
        let trace = json!({"start_ms": 0, "end_ms": 1_000, "observations": [root]});
        let view = render(&trace, Layout::default());
        let lines: Vec<&str> = view.lines().collect();
        let at = lines
            .iter()
            .position(|l| l.starts_with("└─ chat m"))
            .unwrap_or_else(|| panic!("no chat line in\n{view}"));
        assert_eq!(lines[at + 1], "      first token: 120 ms", "\n{view}");
        assert!(!view.contains("first token: 0"), "{view}");
        assert_eq!(view.matches("first token").count(), 1, "{view}");
    }
}
