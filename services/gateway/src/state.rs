//! What every handler of both faces shares.

use std::sync::Arc;

use mesh_auth::Verifier;
use mesh_bus::Bus;
use mesh_proto::control_plane_client::ControlPlaneClient;
use tonic::transport::Channel;

use crate::config::Config;
use crate::metrics::Metrics;

#[derive(Clone)]
pub struct AppState {
    pub verifier: Verifier,
    pub orchestrator: ControlPlaneClient<Channel>,
    /// The orchestrator's tenant quotas (same channel).
    pub quotas: mesh_proto::quota_admin_client::QuotaAdminClient<Channel>,
    pub retrieval: mesh_proto::retrieval_client::RetrievalClient<Channel>,
    pub bus: Bus,
    /// HTTP client to the inference-router (OpenAI-compatible face).
    pub http: reqwest::Client,
    pub config: Arc<Config>,
    pub metrics: Metrics,
    /// Present when `REDIS_URL` is set and the submit limit is on.
    pub submit_limiter: Option<crate::ratelimit::RateLimiter>,
    /// API keys this replica has resolved recently.
    pub api_keys: crate::api_keys::KeyCache,
}
