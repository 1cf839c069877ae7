//! The service's error type: every failure carries an [`ErrorCode`], so the
//! gRPC face (and the gateway's REST face behind it) answer alike. Bad input
//! is always `Invalid` with the field at fault first in the message.

use mesh_runtime::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum RetrievalError {
    /// `field: why`
    #[error("{field}: {why}")]
    Invalid { field: String, why: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
    /// A tenant quota would be exceeded; the message names the quota.
    #[error("{0}")]
    QuotaExceeded(String),
    #[error("{0}")]
    Internal(String),
}

impl RetrievalError {
    pub fn invalid(field: impl Into<String>, why: impl std::fmt::Display) -> Self {
        Self::Invalid {
            field: field.into(),
            why: why.to_string(),
        }
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Invalid { .. } => ErrorCode::InvalidArgument,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::QuotaExceeded(_) => ErrorCode::ResourceExhausted,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }
}

impl From<sea_orm::DbErr> for RetrievalError {
    fn from(error: sea_orm::DbErr) -> Self {
        tracing::warn!(%error, "database error");
        Self::Unavailable(format!("store unavailable: {error}"))
    }
}

impl From<RetrievalError> for tonic::Status {
    fn from(error: RetrievalError) -> Self {
        if let RetrievalError::Internal(message) = &error {
            tracing::error!(%message, "internal error");
        }
        tonic::Status::new(error.code().grpc(), error.to_string())
    }
}
