//! `agentmesh agents`: the tenant's agents by name (`GET /v1/agents`), a
//! page at a time; `-o json` prints the API's page as is.

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::output::Format;

#[derive(clap::Args)]
pub struct AgentsArgs {
    /// Only agents whose name starts with this.
    #[arg(long)]
    prefix: Option<String>,
    /// Agents per page (the gateway bounds it).
    #[arg(long, default_value_t = 50)]
    limit: u32,
    /// The `nextCursor` of the page before.
    #[arg(long)]
    cursor: Option<String>,
}

pub async fn run(base: &str, token: &str, args: AgentsArgs, format: Format) -> anyhow::Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    query.extend(args.prefix.map(|p| ("prefix", p)));
    query.extend(args.cursor.map(|c| ("cursor", c)));
    let response = reqwest::Client::new()
        .get(format!("{}/v1/agents", base.trim_end_matches('/')))
        .query(&query)
        .bearer_auth(token)
        .send()
        .await
        .context("cannot reach the gateway")?;
    let status = response.status();
    let page: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = page["error"]["message"].as_str().unwrap_or("no details");
        bail!("{status}: {message}");
    }
    match format {
        Format::Json => println!("{page}"),
        Format::Human => print!("{}", table(&page)),
    }
    Ok(())
}

/// The page as a table, and how to get the next one.
fn table(page: &Value) -> String {
    use std::fmt::Write as _;
    let mut out = format!(
        "{:<32}  {:>7}  {:<24}  UPDATED\n",
        "NAME", "VERSION", "MODEL"
    );
    for a in page["agents"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "{:<32}  {:>7}  {:<24}  {}",
            a["name"].as_str().unwrap_or_default(),
            a["version"].as_u64().unwrap_or_default(),
            a["model"].as_str().unwrap_or_default(),
            a["updatedAt"].as_str().unwrap_or_default(),
        );
    }
    if let Some(next) = page["nextCursor"].as_str() {
        let _ = writeln!(out, "more: agentmesh agents --cursor {next}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_agent_and_names_the_next_page() {
        let page = serde_json::json!({
            "agents": [
                {"name": "support", "version": 3, "model": "sim-model", "updatedAt": "2026-11-27T14:00:00.000Z"},
                {"name": "billing", "version": 1, "model": "other", "updatedAt": "2026-11-27T13:00:00.000Z"},
            ],
            "nextCursor": "billing",
        });
        let text = table(&page);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[1].starts_with("support") && lines[1].contains("sim-model"));
        assert!(lines[2].contains("      1  other"), "{text}");
        assert_eq!(lines[3], "more: agentmesh agents --cursor billing");
    }
}
