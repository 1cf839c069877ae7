//! `agentmesh api-keys create|list|revoke`: the tenant's API keys for
//! machine clients, through the gateway's admin routes (`/v1/api-keys`).
//! The key itself is printed once, by `create`; nothing else ever shows it.

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::output::Format;

#[derive(clap::Subcommand)]
pub enum ApiKeysCommand {
    /// Create a key (printed once: store it now).
    Create {
        /// What the key is for (a client's name).
        name: String,
        /// viewer, user, operator or admin (at most your own role).
        #[arg(long, default_value = "user")]
        role: String,
        /// Expire the key after this many seconds (default: never).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        expires_in_secs: Option<u64>,
    },
    /// List keys (never their secrets).
    List {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
    },
    /// Revoke a key by id.
    Revoke { id: String },
}

async fn send(request: reqwest::RequestBuilder, token: &str) -> anyhow::Result<Value> {
    let response = request
        .bearer_auth(token)
        .send()
        .await
        .context("cannot reach the gateway")?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let message = body["error"]["message"].as_str().unwrap_or("no details");
        bail!("{status}: {message}");
    }
    Ok(body)
}

pub async fn run(
    base: &str,
    token: &str,
    command: ApiKeysCommand,
    format: Format,
) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("{}/v1/api-keys", base.trim_end_matches('/'));
    let body = match command {
        ApiKeysCommand::Create {
            name,
            role,
            expires_in_secs,
        } => {
            let mut body = json!({"name": name, "role": role});
            if let Some(secs) = expires_in_secs {
                let ms = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                body["expiresAtMs"] = json!(now.saturating_add(ms));
            }
            let created = send(http.post(&url).json(&body), token).await?;
            if format == Format::Human {
                println!(
                    "created key {} ({}, role {})",
                    created["id"].as_str().unwrap_or_default(),
                    created["name"].as_str().unwrap_or_default(),
                    created["role"].as_str().unwrap_or_default()
                );
                println!("{}", created["key"].as_str().unwrap_or_default());
                println!("this is the only time the key is shown; store it now");
                return Ok(());
            }
            created
        }
        ApiKeysCommand::List { all } => {
            let listed = send(
                http.get(&url).query(&[("includeRevoked", all.to_string())]),
                token,
            )
            .await?;
            if format == Format::Human {
                let keys = listed["keys"].as_array().cloned().unwrap_or_default();
                print!("{}", key_table_text(&keys));
                return Ok(());
            }
            listed
        }
        ApiKeysCommand::Revoke { id } => {
            let revoked = send(http.delete(format!("{url}/{id}")), token).await?;
            if format == Format::Human {
                println!("revoked key {id}");
                return Ok(());
            }
            revoked
        }
    };
    println!("{}", serde_json::to_string_pretty(&body)?);
    Ok(())
}

/// The keys as an aligned table: id, name, role, created by, created,
/// expires, revoked.
pub fn key_table_text(keys: &[Value]) -> String {
    let field = |k: &Value, name: &str| k[name].as_str().unwrap_or("-").to_owned();
    let mut rows = vec![[
        "ID".to_owned(),
        "NAME".to_owned(),
        "ROLE".to_owned(),
        "CREATED BY".to_owned(),
        "CREATED".to_owned(),
        "EXPIRES".to_owned(),
        "REVOKED".to_owned(),
    ]];
    for k in keys {
        rows.push([
            field(k, "id"),
            field(k, "name"),
            field(k, "role"),
            field(k, "createdBy"),
            field(k, "createdAt"),
            field(k, "expiresAt"),
            field(k, "revokedAt"),
        ]);
    }
    let widths: Vec<usize> = (0..7)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_marks_missing_times() {
        let keys = vec![json!({
            "id": "0123456789abcdef", "name": "ci", "role": "user",
            "createdBy": "alice", "createdAt": "2026-01-01T00:00:00.000Z",
            "expiresAt": null, "revokedAt": null,
        })];
        let text = key_table_text(&keys);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(
            lines[0].starts_with("ID                NAME  ROLE"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("0123456789abcdef  ci    user"),
            "{text}"
        );
        assert!(
            lines[1].ends_with("2026-01-01T00:00:00.000Z  -        -"),
            "{text}"
        );
    }
}
