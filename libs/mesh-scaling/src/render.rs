//! Renders one agent's worker Deployment and KEDA ScaledObject as a
//! Kustomize Component, from the agent's `spec.scaling`, so a GitOps
//! repository holds exactly what scales that agent. The ScaledObject names
//! the consumer the code creates (`agent-<agent>` on TASKS).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An Agent resource's `spec.scaling`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AgentScaling {
    #[serde(default)]
    pub min_replicas: u32,
    #[serde(default = "default_max")]
    pub max_replicas: u32,
    /// Queue lag one replica absorbs (KEDA `lagThreshold`).
    #[serde(default = "default_lag")]
    pub target_queue_lag_per_replica: u64,
    /// Lag above which the agent scales from zero (`activationLagThreshold`).
    #[serde(default)]
    pub activation_queue_lag: u64,
    #[serde(default = "default_polling")]
    pub polling_interval_seconds: u32,
    #[serde(default = "default_cooldown")]
    pub cooldown_seconds: u32,
    #[serde(default = "default_cooldown")]
    pub scale_down_stabilization_seconds: u32,
}

fn default_max() -> u32 {
    10
}
fn default_lag() -> u64 {
    10
}
fn default_polling() -> u32 {
    30
}
fn default_cooldown() -> u32 {
    300
}

impl Default for AgentScaling {
    fn default() -> Self {
        Self {
            min_replicas: 0,
            max_replicas: default_max(),
            target_queue_lag_per_replica: default_lag(),
            activation_queue_lag: 0,
            polling_interval_seconds: default_polling(),
            cooldown_seconds: default_cooldown(),
            scale_down_stabilization_seconds: default_cooldown(),
        }
    }
}

impl AgentScaling {
    /// `Err((field, why))`, field paths relative to `spec.scaling`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_replicas == 0 || self.max_replicas > 1000 {
            return Err(("maxReplicas", "must be between 1 and 1000".into()));
        }
        if self.min_replicas > self.max_replicas {
            return Err((
                "minReplicas",
                format!("must not exceed maxReplicas ({})", self.max_replicas),
            ));
        }
        if self.target_queue_lag_per_replica == 0 {
            return Err(("targetQueueLagPerReplica", "must be at least 1".into()));
        }
        if self.polling_interval_seconds == 0 {
            return Err(("pollingIntervalSeconds", "must be at least 1".into()));
        }
        Ok(())
    }
}

impl From<&AgentScaling> for mesh_proto::AgentScaling {
    fn from(s: &AgentScaling) -> Self {
        Self {
            min_replicas: s.min_replicas,
            max_replicas: s.max_replicas,
            target_queue_lag_per_replica: s.target_queue_lag_per_replica,
            activation_queue_lag: s.activation_queue_lag,
            polling_interval_seconds: s.polling_interval_seconds,
            cooldown_seconds: s.cooldown_seconds,
            scale_down_stabilization_seconds: s.scale_down_stabilization_seconds,
        }
    }
}

impl From<&mesh_proto::AgentScaling> for AgentScaling {
    fn from(s: &mesh_proto::AgentScaling) -> Self {
        Self {
            min_replicas: s.min_replicas,
            max_replicas: s.max_replicas,
            target_queue_lag_per_replica: s.target_queue_lag_per_replica,
            activation_queue_lag: s.activation_queue_lag,
            polling_interval_seconds: s.polling_interval_seconds,
            cooldown_seconds: s.cooldown_seconds,
            scale_down_stabilization_seconds: s.scale_down_stabilization_seconds,
        }
    }
}

/// Longest agent name `render` accepts: `agent-worker-<agent>` must fit the
/// 63 characters of a label value (KEDA labels its HPA with the name).
pub const MAX_RENDERED_AGENT_NAME: usize = 50;

/// Where the rendered objects point.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub namespace: String,
    pub image: String,
    /// NATS monitoring endpoint KEDA polls (`host:8222`).
    pub nats_monitoring: String,
    pub nats_account: String,
    /// The worker container's requests and limits (an agent's
    /// `spec.resources` overrides the ones it sets).
    pub resources: WorkerResources,
}

/// Kubernetes quantities of the worker container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerResources {
    pub cpu_request: String,
    pub memory_request: String,
    pub cpu_limit: String,
    pub memory_limit: String,
}

impl Default for WorkerResources {
    fn default() -> Self {
        Self {
            cpu_request: "100m".into(),
            memory_request: "128Mi".into(),
            cpu_limit: "1".into(),
            memory_limit: "512Mi".into(),
        }
    }
}

impl WorkerResources {
    /// These defaults with the quantities an agent's spec sets.
    pub fn with_spec(&self, spec: &mesh_proto::AgentResources) -> Self {
        let pick = |set: &str, default: &str| {
            if set.is_empty() {
                default.to_owned()
            } else {
                set.to_owned()
            }
        };
        Self {
            cpu_request: pick(&spec.cpu_request, &self.cpu_request),
            memory_request: pick(&spec.memory_request, &self.memory_request),
            cpu_limit: pick(&spec.cpu_limit, &self.cpu_limit),
            memory_limit: pick(&spec.memory_limit, &self.memory_limit),
        }
    }
}

impl Default for RenderOptions {
    fn default() -> Self {
        Self {
            namespace: "ai-agents".into(),
            image: "agentmesh/agent-worker".into(),
            nats_monitoring: "nats.ai-data.svc.cluster.local:8222".into(),
            nats_account: "$G".into(),
            resources: WorkerResources::default(),
        }
    }
}

/// The files of the component: `(file name, YAML)`.
pub fn agent_worker_component(
    agent: &str,
    scaling: &AgentScaling,
    options: &RenderOptions,
) -> Result<Vec<(String, String)>, mesh_bus::BusError> {
    let consumer = mesh_bus::names::agent_consumer(agent)?;
    if agent.len() > MAX_RENDERED_AGENT_NAME {
        return Err(mesh_bus::BusError::InvalidName {
            kind: "agent",
            value: agent.to_owned(),
            reason: "must be at most 50 characters to render: object names are agent-worker-<agent> and end up in 63-character label values",
        });
    }
    let name = format!("agent-worker-{agent}");
    let labels = json!({
        "app.kubernetes.io/name": "agent-worker",
        "app.kubernetes.io/instance": name,
        "app.kubernetes.io/part-of": "agentmesh",
        "app.kubernetes.io/component": "agents",
        "agentmesh.dev/agent": agent,
    });
    let selector = json!({"matchLabels": {"app.kubernetes.io/instance": name}});
    let http_probe = |path: &str, period: u32, failures: u32| json!({"httpGet": {"path": path, "port": "admin"}, "periodSeconds": period, "failureThreshold": failures});
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels},
        "spec": {
            // KEDA owns the count; this is the count before it takes over.
            "replicas": scaling.min_replicas,
            "revisionHistoryLimit": 5,
            "selector": selector,
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": "9102",
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": {
                    "serviceAccountName": "agent-worker",
                    "automountServiceAccountToken": false,
                    // Longer than the drain: a model call is at most
                    // AGENTMESH_WORKER_INFERENCE_TIMEOUT_MS (90 s in the ConfigMap).
                    "terminationGracePeriodSeconds": 150,
                    "securityContext": {
                        "runAsNonRoot": true,
                        "runAsUser": 65532,
                        "runAsGroup": 65532,
                        "fsGroup": 65532,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "topologySpreadConstraints": [{
                        "maxSkew": 1,
                        "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway",
                        "labelSelector": selector,
                    }],
                    "containers": [{
                        "name": "agent-worker",
                        "image": options.image,
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [
                            {"name": "admin", "containerPort": 9102},
                            {"name": "grpc", "containerPort": 7002},
                        ],
                        "envFrom": [{"configMapRef": {"name": "agent-worker"}}],
                        "env": [
                            {"name": "AGENTMESH_WORKER_AGENTS", "value": agent},
                            {"name": "AGENTMESH_WORKER_ADMIN_LISTEN", "value": "0.0.0.0:9102"},
                            // The mesh key of the service tokens (the
                            // Secret beside the base's other services).
                            {"name": "AGENTMESH_SERVICE_KEY", "valueFrom": {"secretKeyRef": {
                                "name": "agentmesh-service-key", "key": "key",
                            }}},
                        ],
                        "startupProbe": http_probe("/healthz", 2, 30),
                        "livenessProbe": http_probe("/healthz", 10, 3),
                        "readinessProbe": http_probe("/readyz", 5, 2),
                        "resources": {
                            "requests": {"cpu": options.resources.cpu_request, "memory": options.resources.memory_request},
                            "limits": {"cpu": options.resources.cpu_limit, "memory": options.resources.memory_limit},
                        },
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "readOnlyRootFilesystem": true,
                            "runAsNonRoot": true,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
                },
            },
        },
    });
    // At most one of the agent's workers drained at a time.
    let pdb = json!({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels},
        "spec": {"maxUnavailable": 1, "selector": selector},
    });
    let scaled_object = json!({
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": name, "namespace": options.namespace, "labels": labels},
        "spec": {
            "scaleTargetRef": {"name": name},
            "pollingInterval": scaling.polling_interval_seconds,
            "cooldownPeriod": scaling.cooldown_seconds,
            "minReplicaCount": scaling.min_replicas,
            "maxReplicaCount": scaling.max_replicas,
            "advanced": {"horizontalPodAutoscalerConfig": {"behavior": {"scaleDown": {
                "stabilizationWindowSeconds": scaling.scale_down_stabilization_seconds,
            }}}},
            "triggers": [{
                "type": "nats-jetstream",
                "metadata": {
                    "natsServerMonitoringEndpoint": options.nats_monitoring,
                    "account": options.nats_account,
                    "stream": mesh_bus::StreamKind::Tasks.name(),
                    "consumer": consumer,
                    "lagThreshold": scaling.target_queue_lag_per_replica.to_string(),
                    "activationLagThreshold": scaling.activation_queue_lag.to_string(),
                },
            }],
        },
    });
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "resources": ["deployment.yaml", "scaledobject.yaml", "pdb.yaml"],
    });
    let yaml = |v: &Value| serde_yaml::to_string(v).unwrap_or_default();
    let header = format!(
        "# Rendered by `agentmesh render` from agent {agent:?}'s spec.scaling; edit the agent, not this file.\n"
    );
    Ok(vec![
        (
            "kustomization.yaml".into(),
            format!("{header}{}", yaml(&kustomization)),
        ),
        (
            "deployment.yaml".into(),
            format!("{header}{}", yaml(&deployment)),
        ),
        (
            "scaledobject.yaml".into(),
            format!("{header}{}", yaml(&scaled_object)),
        ),
        ("pdb.yaml".into(), format!("{header}{}", yaml(&pdb))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ScalePolicy;
    use std::time::Duration;

    #[test]
    fn the_rendered_scaled_object_reads_back_as_the_same_policy() {
        let scaling = AgentScaling {
            min_replicas: 0,
            max_replicas: 6,
            target_queue_lag_per_replica: 25,
            activation_queue_lag: 2,
            polling_interval_seconds: 5,
            cooldown_seconds: 90,
            scale_down_stabilization_seconds: 60,
        };
        let files = agent_worker_component("support", &scaling, &RenderOptions::default()).unwrap();
        let scaled = &files
            .iter()
            .find(|(n, _)| n == "scaledobject.yaml")
            .unwrap()
            .1;
        let policy = ScalePolicy::from_yaml(scaled, None).unwrap();
        assert_eq!(policy.consumer, "agent-support");
        assert_eq!(policy.stream, "TASKS");
        assert_eq!((policy.min_replicas, policy.max_replicas), (0, 6));
        assert_eq!(
            (policy.lag_threshold, policy.activation_lag_threshold),
            (25, 2)
        );
        assert_eq!(policy.polling_interval, Duration::from_secs(5));
        assert_eq!(policy.cooldown, Duration::from_secs(90));
        assert_eq!(policy.scale_down_stabilization, Duration::from_secs(60));
        let deployment = &files
            .iter()
            .find(|(n, _)| n == "deployment.yaml")
            .unwrap()
            .1;
        assert!(deployment.contains("AGENTMESH_WORKER_AGENTS"));
    }

    #[test]
    fn invalid_scaling_names_the_field() {
        let bad = AgentScaling {
            min_replicas: 5,
            max_replicas: 2,
            ..AgentScaling::default()
        };
        assert_eq!(bad.validate().unwrap_err().0, "minReplicas");
        assert!(
            agent_worker_component(
                "Bad.Name",
                &AgentScaling::default(),
                &RenderOptions::default()
            )
            .is_err()
        );
    }

    #[test]
    fn an_agents_resources_reach_the_worker_container() {
        let options = RenderOptions {
            resources: WorkerResources::default().with_spec(&mesh_proto::AgentResources {
                cpu_request: "250m".into(),
                memory_limit: "1Gi".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let files = agent_worker_component("support", &AgentScaling::default(), &options).unwrap();
        let (_, text) = files.iter().find(|(n, _)| n == "deployment.yaml").unwrap();
        let deployment: serde_json::Value = serde_yaml::from_str(text).unwrap();
        let resources = &deployment["spec"]["template"]["spec"]["containers"][0]["resources"];
        assert_eq!(resources["requests"]["cpu"], "250m");
        assert_eq!(
            resources["requests"]["memory"], "128Mi",
            "unset keeps the default"
        );
        assert_eq!(resources["limits"]["memory"], "1Gi");
    }
}
