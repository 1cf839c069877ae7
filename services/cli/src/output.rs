//! Human-readable output by default, `-o json` for scripts.

use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Json,
}

pub fn task_table(tasks: &[Value]) {
    print!("{}", task_table_text(tasks));
}

/// The task list as `agentmesh tasks` prints it (also a frame of `--watch`).
pub fn task_table_text(tasks: &[Value]) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<36}  {:<16}  {:<18}  {:>7}  CREATED\n",
        "ID", "AGENT", "STATUS", "TOKENS"
    );
    for t in tasks {
        let tokens = t["usage"]["outputTokens"].as_u64().unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<36}  {:<16}  {:<18}  {:>7}  {}",
            t["id"].as_str().unwrap_or_default(),
            t["agent"].as_str().unwrap_or_default(),
            t["status"].as_str().unwrap_or_default(),
            tokens,
            t["createdAt"].as_str().unwrap_or_default(),
        );
    }
    out
}

pub fn task_detail(t: &Value) {
    let field = |k: &str| t[k].as_str().unwrap_or("-").to_owned();
    println!("id:        {}", field("id"));
    println!(
        "agent:     {} (version {})",
        field("agent"),
        t["agentVersion"]
    );
    println!("status:    {}", field("status"));
    println!("attempts:  {}", t["attempts"]);
    println!("steps:     {}", t["steps"]);
    if let Some(session) = t["sessionId"].as_str() {
        println!("session:   {session}");
    }
    if t["approval"].is_object() {
        let a = &t["approval"];
        println!(
            "awaiting:  {} {} (call {}; {} at {})",
            a["tool"].as_str().unwrap_or("-"),
            a["arguments"].as_str().unwrap_or("-"),
            a["callId"].as_str().unwrap_or("-"),
            a["onTimeout"].as_str().unwrap_or("-"),
            a["expiresAt"].as_str().unwrap_or("-"),
        );
        println!(
            "           agentmesh approve {0} | agentmesh reject {0}",
            field("id")
        );
    }
    println!(
        "tokens:    {} in, {} out",
        t["usage"]["inputTokens"], t["usage"]["outputTokens"]
    );
    println!("created:   {}", field("createdAt"));
    println!("finished:  {}", field("finishedAt"));
    println!("input:     {}", field("input"));
    if let Some(error) = t["error"].as_str() {
        println!("error:     {error}");
    }
    println!("output:\n{}", field("output"));
}
