//! A scaling policy read from a KEDA `ScaledObject` with a
//! `nats-jetstream` trigger, with KEDA's defaults for absent fields.

use std::time::Duration;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePolicy {
    /// `metadata.name` of the ScaledObject.
    pub name: String,
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub polling_interval: Duration,
    /// Quiet time before scaling from the minimum non-zero to zero.
    pub cooldown: Duration,
    /// HPA `behavior.scaleDown.stabilizationWindowSeconds` (default 300 s).
    pub scale_down_stabilization: Duration,
    pub stream: String,
    pub consumer: String,
    /// Lag one replica is meant to absorb (`lagThreshold`).
    pub lag_threshold: u64,
    /// Lag above which the workload is active (`activationLagThreshold`).
    pub activation_lag_threshold: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("not YAML: {0}")]
    Yaml(String),
    #[error("{0} is not a keda.sh ScaledObject")]
    NotScaledObject(String),
    #[error("{field}: {why}")]
    Field { field: String, why: String },
}

fn field(field: &str, why: impl Into<String>) -> PolicyError {
    PolicyError::Field {
        field: field.to_owned(),
        why: why.into(),
    }
}

/// KEDA writes trigger metadata as strings; integers are accepted too.
fn number(value: &Value, name: &str, default: u64) -> Result<u64, PolicyError> {
    match value {
        Value::Null => Ok(default),
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| field(name, "must be a non-negative integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| field(name, format!("{s:?} is not a non-negative integer"))),
        _ => Err(field(name, "must be a number")),
    }
}

impl ScalePolicy {
    /// Reads the first `ScaledObject` with a `nats-jetstream` trigger from
    /// a YAML stream (one or several documents, as `kubectl kustomize`
    /// prints them) whose name is `name` (any, when `None`).
    pub fn from_yaml(text: &str, name: Option<&str>) -> Result<Self, PolicyError> {
        use serde::Deserialize as _;
        for document in serde_yaml::Deserializer::from_str(text) {
            let value =
                Value::deserialize(document).map_err(|e| PolicyError::Yaml(e.to_string()))?;
            if value["kind"] != "ScaledObject" {
                continue;
            }
            if name.is_some_and(|n| value["metadata"]["name"] != n) {
                continue;
            }
            return Self::from_value(&value);
        }
        Err(PolicyError::NotScaledObject(
            name.unwrap_or("the document").to_owned(),
        ))
    }

    pub fn from_value(object: &Value) -> Result<Self, PolicyError> {
        let api = object["apiVersion"].as_str().unwrap_or_default();
        if object["kind"] != "ScaledObject" || !api.starts_with("keda.sh/") {
            return Err(PolicyError::NotScaledObject(
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or("?")
                    .to_owned(),
            ));
        }
        let spec = &object["spec"];
        let trigger = spec["triggers"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["type"] == "nats-jetstream"))
            .ok_or_else(|| field("spec.triggers", "no nats-jetstream trigger"))?;
        let meta = &trigger["metadata"];
        let text = |name: &str| {
            meta[name]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| field(&format!("spec.triggers[].metadata.{name}"), "is required"))
        };
        let policy = Self {
            name: object["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            min_replicas: u32::try_from(number(
                &spec["minReplicaCount"],
                "spec.minReplicaCount",
                0,
            )?)
            .map_err(|_| field("spec.minReplicaCount", "too large"))?,
            max_replicas: u32::try_from(number(
                &spec["maxReplicaCount"],
                "spec.maxReplicaCount",
                100,
            )?)
            .map_err(|_| field("spec.maxReplicaCount", "too large"))?,
            polling_interval: Duration::from_secs(number(
                &spec["pollingInterval"],
                "spec.pollingInterval",
                30,
            )?),
            cooldown: Duration::from_secs(number(
                &spec["cooldownPeriod"],
                "spec.cooldownPeriod",
                300,
            )?),
            scale_down_stabilization: Duration::from_secs(number(
                &spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
                "spec.advanced.horizontalPodAutoscalerConfig.behavior.scaleDown.stabilizationWindowSeconds",
                300,
            )?),
            stream: text("stream")?,
            consumer: text("consumer")?,
            lag_threshold: number(
                &meta["lagThreshold"],
                "spec.triggers[].metadata.lagThreshold",
                10,
            )?,
            activation_lag_threshold: number(
                &meta["activationLagThreshold"],
                "spec.triggers[].metadata.activationLagThreshold",
                0,
            )?,
        };
        if policy.lag_threshold == 0 {
            return Err(field(
                "spec.triggers[].metadata.lagThreshold",
                "must be at least 1",
            ));
        }
        if policy.max_replicas == 0 || policy.min_replicas > policy.max_replicas {
            return Err(field(
                "spec.maxReplicaCount",
                format!(
                    "must be at least 1 and at least minReplicaCount ({})",
                    policy.min_replicas
                ),
            ));
        }
        if policy.polling_interval.is_zero() {
            return Err(field("spec.pollingInterval", "must be at least 1 second"));
        }
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OBJECT: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated}
---
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata:
  name: agent-support
spec:
  scaleTargetRef: {name: agent-support}
  pollingInterval: 5
  cooldownPeriod: 60
  minReplicaCount: 0
  maxReplicaCount: 8
  advanced:
    horizontalPodAutoscalerConfig:
      behavior:
        scaleDown: {stabilizationWindowSeconds: 30}
  triggers:
    - type: nats-jetstream
      metadata:
        natsServerMonitoringEndpoint: nats.ai-data.svc:8222
        account: "$G"
        stream: TASKS
        consumer: agent-support
        lagThreshold: "20"
        activationLagThreshold: "2"
"#;

    #[test]
    fn reads_every_parameter() {
        let p = ScalePolicy::from_yaml(OBJECT, None).unwrap();
        assert_eq!(
            p,
            ScalePolicy {
                name: "agent-support".into(),
                min_replicas: 0,
                max_replicas: 8,
                polling_interval: Duration::from_secs(5),
                cooldown: Duration::from_secs(60),
                scale_down_stabilization: Duration::from_secs(30),
                stream: "TASKS".into(),
                consumer: "agent-support".into(),
                lag_threshold: 20,
                activation_lag_threshold: 2,
            }
        );
    }

    #[test]
    fn keda_defaults_apply_and_bad_values_name_the_field() {
        let minimal = OBJECT
            .replace("  pollingInterval: 5\n", "")
            .replace("        activationLagThreshold: \"2\"\n", "");
        let p = ScalePolicy::from_yaml(&minimal, Some("agent-support")).unwrap();
        assert_eq!(p.polling_interval, Duration::from_secs(30));
        assert_eq!(p.activation_lag_threshold, 0);

        let err = ScalePolicy::from_yaml(&OBJECT.replace("\"20\"", "\"lots\""), None).unwrap_err();
        assert!(err.to_string().contains("lagThreshold"), "{err}");
        let err = ScalePolicy::from_yaml(
            &OBJECT.replace("consumer: agent-support", "consumer: \"\""),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("consumer"), "{err}");
        assert!(matches!(
            ScalePolicy::from_yaml(OBJECT, Some("other")),
            Err(PolicyError::NotScaledObject(_))
        ));
    }
}
