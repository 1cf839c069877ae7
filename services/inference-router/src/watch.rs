//! The router's two background loops: reloading the routes file when its
//! modification time changes, and probing every backend's readiness (and
//! scraping the `/metrics` of every backend in a `queue_aware` pool). Both stop with the service. A bad new routes
//! file is logged and counted (`router_route_reloads{result="error"}`), and
//! the table in use keeps serving: a reload must never take routes away
//! because of a typo.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Target};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::pool::Router;
use crate::routes::{self, Strategy};
use crate::select::Load;

/// What identifies a version of the file without reading it.
pub type Stamp = (SystemTime, u64);

pub fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

pub async fn reload_loop(
    router: Arc<Router>,
    config: Config,
    path: PathBuf,
    mut seen: Option<Stamp>,
    metrics: Metrics,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(config.reload_interval) => {}
        }
        let now = stamp(&path);
        if now == seen {
            continue;
        }
        seen = now;
        match routes::load_file(&path, &config, &config.env.0) {
            Ok(spec) => {
                router.replace(spec);
                metrics.reload("ok");
                tracing::info!(path = %path.display(), "route table reloaded");
                // Backends new in this table are taken as ready until
                // probed: probe now rather than at the next tick.
                tokio::select! {
                    () = stop.cancelled() => return Ok(()),
                    () = probe_round(&router) => {}
                }
            }
            Err(error) => {
                metrics.reload("error");
                tracing::error!(path = %path.display(), %error, "route table rejected, the previous one keeps serving");
            }
        }
    }
}

/// Probes every backend's readiness (`health.path`) and, in `queue_aware`
/// pools, scrapes its `/metrics`, all at once, every tick: the shortest
/// `health.interval` or `scrape_interval` of the table (one tick for all
/// keeps this one loop; a pool with a longer interval is probed more often
/// than it asked, which costs one small GET). The service runs one round
/// ([`probe_round`]) before it starts, so this loop waits a tick first.
pub async fn scrape_loop(
    router: Arc<Router>,
    stop: CancellationToken,
) -> Result<(), std::convert::Infallible> {
    loop {
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(tick(&router)) => {}
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = probe_round(&router) => {}
        }
    }
}

/// The loop's period for the current table.
fn tick(router: &Router) -> Duration {
    let table = router.table();
    table
        .pools
        .values()
        .flat_map(|p| {
            let scrape =
                (p.spec.strategy == Strategy::QueueAware).then_some(p.spec.scrape_interval);
            std::iter::once(p.spec.health.interval).chain(scrape)
        })
        .min()
        .unwrap_or(Duration::from_secs(1))
}

/// One probe of every backend of the current table, each bounded by the
/// tick; returns when all have answered or timed out.
pub async fn probe_round(router: &Router) {
    let table = router.table();
    let interval = tick(router);
    let probes = table.pools.values().flat_map(|pool| {
        pool.backends.iter().map(move |backend| async move {
            let target = Target {
                base: backend.url(),
                api_key: backend.api_key(),
                first_byte: interval,
                total: interval,
            };
            let health = router.client().get(&target, &pool.spec.health.path);
            let metrics = async {
                if pool.spec.strategy != Strategy::QueueAware {
                    return;
                }
                let scrape = Target {
                    api_key: None,
                    ..target
                };
                let load = match router.client().get(&scrape, "/metrics").await {
                    Ok(response) => match response.text().await {
                        Ok(text) => parse_vllm_load(&text),
                        Err(_) => None,
                    },
                    Err(error) => {
                        tracing::debug!(backend = %backend.url(), %error, "metrics scrape failed");
                        None
                    }
                };
                // A backend that cannot be scraped loses its stale numbers:
                // its score falls back to this router's in-flight count.
                backend.set_load(load);
            };
            let (health, ()) = futures::join!(health, metrics);
            backend.set_ready(ready(&health));
        })
    });
    futures::future::join_all(probes).await;
}

/// A readiness probe's verdict: any answer below 500 is a server that is
/// up (a 404 too: it has no such path, OpenAI's API for one); a 5xx, a
/// refused connection or no answer in time is not ready.
fn ready(probe: &Result<reqwest::Response, BackendError>) -> bool {
    match probe {
        Ok(_) => true,
        Err(BackendError::Status { status, .. }) => *status < 500,
        Err(_) => false,
    }
}

/// vLLM's load from its Prometheus text: each gauge summed over its label
/// sets (one per model); KV-cache usage from `vllm:kv_cache_usage_perc`, or
/// the older `vllm:gpu_cache_usage_perc`. `None` when neither queue gauge
/// is there (not a vLLM-compatible server).
pub fn parse_vllm_load(text: &str) -> Option<Load> {
    let mut waiting = None;
    let mut running = None;
    let mut kv = None;
    let mut gpu = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        let slot = match name {
            "vllm:num_requests_waiting" => &mut waiting,
            "vllm:num_requests_running" => &mut running,
            "vllm:kv_cache_usage_perc" => &mut kv,
            "vllm:gpu_cache_usage_perc" => &mut gpu,
            _ => continue,
        };
        let value = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite());
        if let Some(value) = value {
            *slot = Some(slot.unwrap_or(0.0) + value);
        }
    }
    if waiting.is_none() && running.is_none() {
        return None;
    }
    Some(Load {
        waiting: waiting.unwrap_or(0.0),
        running: running.unwrap_or(0.0),
        kv_cache: kv.or(gpu).unwrap_or(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_answer_below_500_is_ready() {
        let status = |status| {
            ready(&Err(BackendError::Status {
                status,
                body: Default::default(),
            }))
        };
        assert!(status(404) && status(401));
        assert!(!status(503) && !status(500));
        assert!(!ready(&Err(BackendError::Connect("refused".into()))));
        assert!(!ready(&Err(BackendError::Timeout(Duration::from_secs(1)))));
    }

    #[test]
    fn vllm_metrics_parse_with_either_cache_name() {
        let text = "# HELP vllm:num_requests_waiting x\n\
            vllm:num_requests_waiting{model_name=\"a\"} 2\n\
            vllm:num_requests_waiting{model_name=\"b\"} 1\n\
            vllm:num_requests_running{model_name=\"a\"} 5\n\
            vllm:gpu_cache_usage_perc{model_name=\"a\"} 0.5\n\
            vllm:num_requests_waiting_other 9\n";
        assert_eq!(
            parse_vllm_load(text),
            Some(Load {
                waiting: 3.0,
                running: 5.0,
                kv_cache: 0.5
            })
        );
        let newer = "vllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.25\nvllm:gpu_cache_usage_perc 0.9\n";
        assert_eq!(parse_vllm_load(newer).unwrap().kv_cache, 0.25);
        assert_eq!(parse_vllm_load("tgi_queue_size 3\n"), None);
    }
}
