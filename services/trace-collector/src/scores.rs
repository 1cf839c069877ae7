//! Scores on a trace or one of its observations (`POST /api/scores`):
//! validated here, naming the field at fault, and returned with their
//! trace. A score may precede its trace (an evaluator that is faster than
//! the writer); it is scoped by tenant like everything else, so scoring
//! another tenant's trace id only ever creates a score of one's own.

use mesh_store::traces::score;
use sea_orm::{
    ActiveValue::NotSet, ColumnTrait as _, DatabaseConnection, DbErr, EntityTrait as _,
    QueryFilter as _, QueryOrder as _,
};
use serde::Serialize;
use serde_json::Value;

use crate::store::now_ms;

const MAX_NAME: usize = 200;
const MAX_TEXT: usize = 4096;

/// A score as returned with its trace.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreView {
    pub id: i64,
    pub trace_id: String,
    /// The observation scored; absent for a score on the whole trace.
    pub observation_id: Option<String>,
    pub name: String,
    /// A number or a string, as posted.
    pub value: Value,
    pub data_type: &'static str,
    pub comment: Option<String>,
    pub created_at_ms: i64,
}

impl From<score::Model> for ScoreView {
    fn from(s: score::Model) -> Self {
        let (value, data_type) = match (s.numeric_value, s.string_value) {
            (Some(n), _) => (
                serde_json::Number::from_f64(n)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                "NUMERIC",
            ),
            (None, Some(text)) => (Value::String(text), "CATEGORICAL"),
            (None, None) => (Value::Null, "NUMERIC"),
        };
        Self {
            id: s.id,
            trace_id: s.trace_id,
            observation_id: s.span_id,
            name: s.name,
            value,
            data_type,
            comment: s.comment,
            created_at_ms: s.created_at_ms,
        }
    }
}

/// A validated score, ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewScore {
    pub trace_id: String,
    pub span_id: Option<String>,
    pub name: String,
    pub value: ScoreValue,
    pub comment: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ScoreValue {
    Numeric(f64),
    Text(String),
}

fn hex_id(field: &str, value: &str, digits: usize) -> Result<String, String> {
    let lower = value.to_ascii_lowercase();
    if lower.len() != digits
        || !lower.bytes().all(|b| b.is_ascii_hexdigit())
        || lower.bytes().all(|b| b == b'0')
    {
        return Err(format!(
            "{field}: must be {digits} hex digits, not all zero"
        ));
    }
    Ok(lower)
}

fn optional_string(body: &Value, field: &str) -> Result<Option<String>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("{field}: must be a string")),
    }
}

/// Validates a posted score (snake_case, or Langfuse's camelCase names).
pub fn parse(body: &Value) -> Result<NewScore, String> {
    if !body.is_object() {
        return Err("body: must be a JSON object".to_owned());
    }
    let either = |snake: &'static str, camel: &'static str| -> Result<Option<String>, String> {
        Ok(optional_string(body, snake)?.or(optional_string(body, camel)?))
    };
    let trace_id = either("trace_id", "traceId")?.ok_or("trace_id: required")?;
    let trace_id = hex_id("trace_id", &trace_id, 32)?;
    let span_id = either("observation_id", "observationId")?
        .map(|s| hex_id("observation_id", &s, 16))
        .transpose()?;
    let name = optional_string(body, "name")?.ok_or("name: required")?;
    if name.trim().is_empty() || name.len() > MAX_NAME {
        return Err(format!("name: must be 1 to {MAX_NAME} bytes"));
    }
    let value = match body.get("value") {
        None | Some(Value::Null) => return Err("value: required".to_owned()),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if v.is_finite() => ScoreValue::Numeric(v),
            _ => return Err("value: must be a finite number".to_owned()),
        },
        Some(Value::Bool(b)) => ScoreValue::Numeric(if *b { 1.0 } else { 0.0 }),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TEXT => {
            ScoreValue::Text(s.clone())
        }
        Some(Value::String(_)) => {
            return Err(format!(
                "value: a string value must be 1 to {MAX_TEXT} bytes"
            ));
        }
        Some(_) => return Err("value: must be a number or a string".to_owned()),
    };
    let comment = optional_string(body, "comment")?;
    if comment.as_ref().is_some_and(|c| c.len() > MAX_TEXT) {
        return Err(format!("comment: must be at most {MAX_TEXT} bytes"));
    }
    Ok(NewScore {
        trace_id,
        span_id,
        name,
        value,
        comment,
    })
}

pub async fn insert(
    db: &DatabaseConnection,
    tenant: &str,
    new: NewScore,
) -> Result<ScoreView, DbErr> {
    let (numeric_value, string_value) = match new.value {
        ScoreValue::Numeric(v) => (Some(v), None),
        ScoreValue::Text(s) => (None, Some(s)),
    };
    let mut row = score::Model {
        id: 0,
        tenant: tenant.to_owned(),
        trace_id: new.trace_id,
        span_id: new.span_id,
        name: new.name,
        numeric_value,
        string_value,
        comment: new.comment,
        created_at_ms: now_ms(),
    };
    let mut active: score::ActiveModel = row.clone().into();
    active.id = NotSet;
    row.id = score::Entity::insert(active).exec(db).await?.last_insert_id;
    Ok(row.into())
}

/// The scores of one of `tenant`'s traces, oldest first.
pub async fn of_trace(
    db: &DatabaseConnection,
    tenant: &str,
    trace_id: &str,
) -> Result<Vec<ScoreView>, DbErr> {
    Ok(score::Entity::find()
        .filter(score::Column::Tenant.eq(tenant))
        .filter(score::Column::TraceId.eq(trace_id))
        .order_by_asc(score::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(ScoreView::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn validation_names_the_field() {
        let trace = "ab".repeat(16);
        let ok = parse(&json!({"traceId": trace, "name": "accuracy", "value": 0.9})).unwrap();
        assert_eq!(ok.value, ScoreValue::Numeric(0.9));
        let ok = parse(
            &json!({"trace_id": trace.to_uppercase(), "observation_id": "cd".repeat(8),
            "name": "tone", "value": "polite", "comment": "fine"}),
        )
        .unwrap();
        assert_eq!(ok.trace_id, trace);
        assert_eq!(ok.span_id.as_deref(), Some("cdcdcdcdcdcdcdcd"));
        for (body, field) in [
            (json!({"name": "n", "value": 1}), "trace_id"),
            (
                json!({"trace_id": "xyz", "name": "n", "value": 1}),
                "trace_id",
            ),
            (
                json!({"trace_id": trace, "observation_id": "1", "name": "n", "value": 1}),
                "observation_id",
            ),
            (json!({"trace_id": trace, "value": 1}), "name"),
            (json!({"trace_id": trace, "name": 5, "value": 1}), "name"),
            (json!({"trace_id": trace, "name": "n"}), "value"),
            (
                json!({"trace_id": trace, "name": "n", "value": [1]}),
                "value",
            ),
            (
                json!({"trace_id": trace, "name": "n", "value": 1, "comment": 2}),
                "comment",
            ),
            (json!([1]), "body"),
        ] {
            let err = parse(&body).unwrap_err();
            assert!(err.starts_with(field), "{body}: {err}");
        }
    }
}
