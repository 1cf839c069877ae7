//! Part of the `traces` scenario: the writer's cost on ONE trace with many
//! observations. An agent run of a few thousand steps sends its spans in
//! many small batches; a writer whose per-batch work grows with the
//! observations already stored is quadratic in the trace's size. Measured
//! on the writer's store function (no bus, no HTTP) against a fresh
//! PostgreSQL: `total` observations of one trace in batches of `batch`,
//! stored one batch after another, then the same number of observations
//! spread over `total / batch` traces (one batch each) as the baseline: a
//! writer that is linear stores both in about the same time.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use trace_collector::mapping::ObservationRow;

/// `total` observations in batches of `batch`; every batch of one trace
/// (`one_trace`) or each of its own.
fn batches(total: usize, batch: usize, one_trace: bool) -> Vec<Vec<ObservationRow>> {
    let template = trace_collector::writer::rows_of(&super::bench_batch(10));
    let mut out = Vec::new();
    let mut i = 0;
    while i < total {
        let trace = if one_trace {
            "0a".repeat(16)
        } else {
            format!("{:032x}", out.len() + 1)
        };
        let rows = (i..(i + batch).min(total))
            .map(|k| {
                let mut row = template[k % template.len()].clone();
                row.trace_id.clone_from(&trace);
                row.span_id = format!("{:016x}", k + 1);
                row.parent_span_id = if k == 0 || (!one_trace && k % batch == 0) {
                    String::new()
                } else if one_trace {
                    format!("{:016x}", 1)
                } else {
                    format!("{:016x}", (k / batch) * batch + 1)
                };
                row.start_ms = 1_700_000_000_000 + k as i64;
                row.end_ms = row.start_ms + 250;
                row
            })
            .collect();
        out.push(rows);
        i += batch;
    }
    out
}

async fn store_all(url: &str, batches: Vec<Vec<ObservationRow>>) -> anyhow::Result<Duration> {
    let db = mesh_store::connect(url, 4).await?;
    mesh_store::traces::migrate(&db).await?;
    let started = Instant::now();
    for rows in batches {
        trace_collector::store::store(&db, "bench", rows).await?;
    }
    let took = started.elapsed();
    db.close().await?;
    Ok(took)
}

/// Prints the one-trace time next to the many-traces baseline, and checks
/// the one trace's totals.
pub async fn many_observations(total: usize, batch: usize) -> anyhow::Result<()> {
    let url = mesh_integration::fresh_postgres().await?;
    let one = store_all(&url, batches(total, batch, true)).await?;
    let db = mesh_store::connect(&url, 1).await?;
    let tree = trace_collector::store::get(&db, "bench", &"0a".repeat(16), 48)
        .await?
        .context("the big trace was not stored")?;
    ensure!(
        tree.trace.observation_count == total as i64,
        "the big trace counts {} observations, not {total}",
        tree.trace.observation_count
    );
    db.close().await?;
    let url = mesh_integration::fresh_postgres().await?;
    let spread = store_all(&url, batches(total, batch, false)).await?;
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    println!(
        "  one trace of {total} observations in batches of {batch}: {:.0} spans/s ({} ms); the same spans over {} traces: {:.0} spans/s ({} ms); ratio {:.2}x",
        rate(one),
        one.as_millis(),
        total.div_ceil(batch),
        rate(spread),
        spread.as_millis(),
        rate(one) / rate(spread)
    );
    Ok(())
}

/// The Langfuse-compatible endpoint's cost per export with the key cache
/// off (one database read per request, as before the cache) and on (the
/// default TTL), same collector, same requests: `n` exports of 10 spans
/// with `concurrency` in flight. Requests are answered at durable enqueue,
/// so the writer's pace does not enter the figure.
pub async fn langfuse_ingest(n: usize, concurrency: usize) -> anyhow::Result<()> {
    use prost::Message as _;
    let nats = mesh_integration::Nats::start()?;
    let mut shared = mesh_integration::mesh::test_shared_config()?;
    shared.nats_url = nats.url.clone();
    shared.database_url = Some(mesh_integration::fresh_postgres().await?);
    let data = tempfile::tempdir()?;
    let http = reqwest::Client::new();
    let mut rates = Vec::new();
    for ttl in [Duration::ZERO, Duration::from_secs(10)] {
        let mut config =
            trace_collector::Config::ephemeral(shared.clone(), data.path().to_owned())?;
        config.key_cache_ttl = ttl;
        let stop = tokio_util::sync::CancellationToken::new();
        let running = trace_collector::start(config, stop.clone()).await?;
        let base = format!("http://{}", running.http_addr);
        let key: serde_json::Value = http
            .post(format!("{base}/api/keys"))
            .header("agentmesh-tenant", "bench")
            .header(
                "agentmesh-service-token",
                mesh_integration::mesh::service_token(),
            )
            .send()
            .await?
            .json()
            .await?;
        let (public, secret) = (
            key["public_key"]
                .as_str()
                .context("no public key")?
                .to_owned(),
            key["secret_key"]
                .as_str()
                .context("no secret key")?
                .to_owned(),
        );
        // Fresh bodies: the receiver dedupes identical requests on TRACES.
        let bodies: Vec<Vec<u8>> = (0..n + concurrency)
            .map(|_| super::bench_batch(10).encode_to_vec())
            .collect();
        let url = format!("{base}/api/public/otel/v1/traces");
        let post = |i: usize| {
            let request = http
                .post(&url)
                .basic_auth(&public, Some(&secret))
                .header("content-type", "application/x-protobuf")
                .body(bodies[i].clone());
            async move {
                let status = request.send().await?.status();
                ensure!(status.is_success(), "langfuse export answered {status}");
                anyhow::Ok(())
            }
        };
        super::closed_loop(concurrency, concurrency, |i| post(n + i)).await?;
        let (_, took) = super::closed_loop(n, concurrency, post).await?;
        rates.push(n as f64 / took.as_secs_f64());
        stop.cancel();
        running.stopped.wait().await?;
    }
    println!(
        "  langfuse ingest ({n} exports of 10 spans, {concurrency} in flight): key cache off {:.0} exports/s, on {:.0} exports/s ({:.2}x)",
        rates[0],
        rates[1],
        rates[1] / rates[0]
    );
    Ok(())
}
