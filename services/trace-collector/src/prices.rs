//! The model price table: USD per million input and output tokens, keyed
//! by model name or name prefix. The operator edits it as YAML in
//! `AGENTMESH_TRACES_PRICES_FILE`; the collector polls the file's mtime
//! and swaps the table in when it changes. A file that fails to parse is
//! logged and the previous table stays in force: a typo must never zero
//! every cost. Costs are computed once, at write time, so a price change
//! applies to spans stored after it and never rewrites history.
//!
//! File format:
//!
//! ```yaml
//! models:
//!   gpt-4o-mini: { input: 0.15, output: 0.60 }
//!   "claude-3-5": { input: 3.0, output: 15.0 }   # a prefix: claude-3-5-sonnet-...
//! ```
//!
//! An exact name wins over a prefix; among prefixes, the longest wins.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

/// USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
}

/// The cost of one generation, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cost {
    pub input: f64,
    pub output: f64,
    pub total: f64,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceTable {
    #[serde(default)]
    pub models: BTreeMap<String, Price>,
}

#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    #[error("read {path}: {message}")]
    Read { path: String, message: String },
    #[error("parse {path}: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: models.{model}: prices must be finite and not negative")]
    Invalid { path: String, model: String },
}

impl PriceTable {
    /// The built-in table, used when no file is configured. ILLUSTRATIVE
    /// list prices only (USD per 1M tokens, as published by the providers
    /// when this was written); operators should supply their own file.
    /// Self-hosted models (smollm2, the simulator) cost nothing.
    pub fn builtin() -> Self {
        let models = [
            ("smollm2", 0.0, 0.0),
            ("simulated", 0.0, 0.0),
            ("gpt-4o-mini", 0.15, 0.60),
            ("gpt-4o", 2.50, 10.00),
            ("claude-3-5-haiku", 0.80, 4.00),
            ("claude-3-5-sonnet", 3.00, 15.00),
            ("llama-3.1-8b", 0.0, 0.0),
        ];
        Self {
            models: models
                .into_iter()
                .map(|(m, input, output)| (m.to_owned(), Price { input, output }))
                .collect(),
        }
    }

    pub fn parse(path: &str, yaml: &str) -> Result<Self, PriceError> {
        let table: Self = serde_yaml::from_str(yaml).map_err(|e| PriceError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        for (model, price) in &table.models {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(price.input) || !ok(price.output) {
                return Err(PriceError::Invalid {
                    path: path.to_owned(),
                    model: model.clone(),
                });
            }
        }
        Ok(table)
    }

    /// The price of `model`: exact name, else the longest matching prefix.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(p) = self.models.get(model) {
            return Some(*p);
        }
        self.models
            .iter()
            .filter(|(k, _)| !k.is_empty() && model.starts_with(k.as_str()))
            .max_by_key(|(k, _)| k.len())
            .map(|(_, p)| *p)
    }

    /// The cost of a generation; `None` when the model has no price.
    pub fn cost(&self, model: &str, input_tokens: i64, output_tokens: i64) -> Option<Cost> {
        let price = self.price(model)?;
        #[allow(clippy::cast_precision_loss)] // token counts stay far below 2^52
        let (input, output) = (
            input_tokens.max(0) as f64 * price.input / 1e6,
            output_tokens.max(0) as f64 * price.output / 1e6,
        );
        Some(Cost {
            input,
            output,
            total: input + output,
        })
    }
}

/// The table in force, shared by the writers and swapped by [`watch`].
#[derive(Debug, Clone)]
pub struct Prices(Arc<RwLock<Arc<PriceTable>>>);

impl Prices {
    pub fn new(table: PriceTable) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(table))))
    }

    pub fn current(&self) -> Arc<PriceTable> {
        // A poisoned lock still holds a whole table (swaps are one store).
        match self.0.read() {
            Ok(t) => t.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, table: PriceTable) {
        let table = Arc::new(table);
        match self.0.write() {
            Ok(mut t) => *t = table,
            Err(poisoned) => *poisoned.into_inner() = table,
        }
    }

    /// Loads the file (or the built-in table without one). A missing or
    /// broken file at start is an error: the operator asked for it.
    pub fn load(path: Option<&PathBuf>) -> Result<Self, PriceError> {
        match path {
            None => Ok(Self::new(PriceTable::builtin())),
            Some(path) => Ok(Self::new(read(path)?)),
        }
    }
}

fn read(path: &PathBuf) -> Result<PriceTable, PriceError> {
    let shown = path.display().to_string();
    let yaml = std::fs::read_to_string(path).map_err(|e| PriceError::Read {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    PriceTable::parse(&shown, &yaml)
}

fn mtime(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Polls `path` every `interval` and reloads it when its mtime or size
/// changes; a bad file keeps the previous table.
pub async fn watch(
    prices: Prices,
    path: PathBuf,
    interval: Duration,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    let mut seen = mtime(&path);
    let mut tick = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let now = mtime(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match read(&path) {
            Ok(table) => {
                tracing::info!(path = %path.display(), models = table.models.len(), "price table reloaded");
                prices.set(table);
            }
            Err(error) => {
                tracing::warn!(%error, "price table not reloaded; keeping the previous one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_beats_prefix_and_longest_prefix_wins() {
        let t = PriceTable::parse(
            "p.yaml",
            "models:\n  gpt-4o: {input: 2.5, output: 10}\n  gpt-4o-mini: {input: 0.15, output: 0.6}\n  gpt: {input: 1, output: 1}\n",
        )
        .unwrap();
        assert_eq!(t.price("gpt-4o").unwrap().input, 2.5);
        assert_eq!(t.price("gpt-4o-mini-2024-07-18").unwrap().input, 0.15);
        assert_eq!(t.price("gpt-3.5").unwrap().input, 1.0);
        assert!(t.price("llama").is_none());
        let c = t.cost("gpt-4o", 1_000_000, 500_000).unwrap();
        assert!((c.input - 2.5).abs() < 1e-9 && (c.output - 5.0).abs() < 1e-9);
        assert!((c.total - 7.5).abs() < 1e-9);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let e = PriceTable::parse("p.yaml", "models:\n  m: {input: -1, output: 0}\n").unwrap_err();
        assert!(e.to_string().contains("models.m"), "{e}");
        let e = PriceTable::parse("p.yaml", "models:\n  m: {inputs: 1}\n").unwrap_err();
        assert!(e.to_string().contains("p.yaml"), "{e}");
        assert_eq!(
            PriceTable::builtin().cost("smollm2", 10, 10).unwrap().total,
            0.0
        );
    }
}
