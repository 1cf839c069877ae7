//! Queue-depth scaling as KEDA does it, for the places Kubernetes is not:
//! [`ScalePolicy`] is read from a rendered KEDA `ScaledObject` (the same
//! file a GitOps repository applies), [`Scaler::step`] applies KEDA's rule
//! (activation, `ceil(lag / lagThreshold)` within min and max, HPA's
//! tolerance and scale-down stabilization, cooldown to zero), and
//! [`run`] polls a JetStream consumer's lag and resizes a set of
//! [`Replicas`] accordingly.
//!
//! This crate never decides what a replica is: the local runner and the
//! tests plug in worker processes or runtimes.

mod policy;
mod render;
mod rule;
mod runner;

pub use policy::{PolicyError, ScalePolicy};
pub use render::{AgentScaling, RenderOptions, WorkerResources, agent_worker_component};
pub use rule::Scaler;
pub use runner::{Replicas, run};
