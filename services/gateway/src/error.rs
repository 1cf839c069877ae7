//! One error type for both faces: REST answers `{"error": {code, message,
//! field}}` with the HTTP status of its [`ErrorCode`], gRPC answers the
//! matching status code with the same message.

use axum::Json;
use axum::response::{IntoResponse, Response};
use mesh_runtime::ErrorCode;
use serde_json::json;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The request field at fault, when one is.
    pub field: Option<String>,
    /// For rate limits: when to come back (`Retry-After`).
    pub retry_after: Option<std::time::Duration>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: None,
        }
    }

    /// `field: why`, with `field` recorded for clients.
    pub fn invalid(field: &str, why: impl std::fmt::Display) -> Self {
        Self {
            code: ErrorCode::InvalidArgument,
            message: format!("{field}: {why}"),
            field: Some(field.to_owned()),
            retry_after: None,
        }
    }

    pub fn unauthenticated(why: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::Unauthenticated, why.to_string())
    }

    pub fn to_status(&self) -> tonic::Status {
        let mut status = tonic::Status::new(self.code.grpc(), self.message.clone());
        if let Some(after) = self.retry_after
            && let Ok(value) = after.as_secs().to_string().parse()
        {
            status.metadata_mut().insert("retry-after", value);
        }
        status
    }
}

/// Upstream (orchestrator) statuses keep their meaning; their messages
/// follow the `field: why` convention, which recovers the field.
/// A resource-document check's failure: 400 naming its field path.
impl From<mesh_spec::FieldError> for ApiError {
    fn from(error: mesh_spec::FieldError) -> Self {
        Self::invalid(&error.path, &error.message)
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> Self {
        let code = ErrorCode::from_grpc(status.code());
        let message = status.message().to_owned();
        let field = (code == ErrorCode::InvalidArgument)
            .then(|| message.split_once(": ").map(|(f, _)| f))
            .flatten()
            .filter(|f| !f.is_empty() && !f.contains(' '))
            .map(str::to_owned);
        if code == ErrorCode::Internal {
            tracing::error!(status = ?status.code(), message = %message, "upstream failure");
        }
        // A quota refusal says when to come back (seconds).
        let retry_after = status
            .metadata()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_secs);
        Self {
            code,
            message,
            field,
            retry_after,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(field) = &self.field {
            body["field"] = json!(field);
        }
        let mut response = (self.code.http(), Json(json!({ "error": body }))).into_response();
        if let Some(after) = self.retry_after
            && let Ok(value) =
                axum::http::HeaderValue::from_str(&after.as_secs().max(1).to_string())
        {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, value);
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_invalid_argument_keeps_the_field() {
        let e = ApiError::from(tonic::Status::invalid_argument(
            "spec.temperature: must be between 0 and 2",
        ));
        assert_eq!(e.code, ErrorCode::InvalidArgument);
        assert_eq!(e.field.as_deref(), Some("spec.temperature"));
        let e = ApiError::from(tonic::Status::not_found("task x not found"));
        assert_eq!(e.code.http(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(e.field, None);
    }

    #[test]
    fn upstream_retry_after_reaches_both_faces() {
        let mut status = tonic::Status::resource_exhausted("over the quota");
        status
            .metadata_mut()
            .insert("retry-after", "7".parse().unwrap());
        let e = ApiError::from(status);
        assert_eq!(e.retry_after, Some(std::time::Duration::from_secs(7)));
        let response = e.clone().into_response();
        assert_eq!(response.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "7");
        assert_eq!(e.to_status().metadata().get("retry-after").unwrap(), "7");
    }
}
