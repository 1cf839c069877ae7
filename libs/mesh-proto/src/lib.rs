//! The one crate that owns code generation for `proto/agentmesh/v1`: message
//! types for the bus payloads and the gRPC stubs of every service.

#![allow(clippy::doc_markdown, clippy::large_enum_variant)]

pub mod v1 {
    tonic::include_proto!("agentmesh.v1");
}

pub use v1::*;

/// The Milvus API subset (`milvus.proto.milvus.MilvusService`) that the
/// retrieval service's Milvus backend calls.
pub mod milvus {
    tonic::include_proto!("milvus.proto.milvus");
}

impl v1::TaskStatus {
    /// A terminal task never changes state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The lowercase name used by REST (`queued`, `running`, ...).
    pub fn rest_name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::AwaitingApproval => "awaiting_approval",
        }
    }

    pub fn from_rest_name(name: &str) -> Option<Self> {
        Some(match name {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "cancelled" => Self::Cancelled,
            "awaiting_approval" => Self::AwaitingApproval,
            _ => return None,
        })
    }
}

impl v1::task_event::Kind {
    /// Whether this event ends the task's event stream.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed(_) | Self::Failed(_) | Self::Cancelled(_)
        )
    }

    /// Short name used as the SSE `event:` field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Started(_) => "started",
            Self::Delta(_) => "delta",
            Self::Completed(_) => "completed",
            Self::Failed(_) => "failed",
            Self::CancelRequested(_) => "cancel_requested",
            Self::Cancelled(_) => "cancelled",
            Self::Retrying(_) => "retrying",
            Self::ModelStep(_) => "model_step",
            Self::ToolCall(_) => "tool_call",
            Self::ToolResult(_) => "tool_result",
            Self::ApprovalRequested(_) => "approval_requested",
            Self::ApprovalResolved(_) => "approval_resolved",
        }
    }
}
