//! Scenario `auth`: what authentication costs a gateway route, as requests
//! per second of the same route on two gateways of the same build, in the
//! same run, in front of the same orchestrator:
//!
//! - **on**: the gateway as deployed: the bearer JWT verified (HS256,
//!   `exp`/`nbf` with leeway, the tenant and role claims, the role table),
//!   the API-key layer, and the per-tenant submit rate limit counted in
//!   Redis (`INCR` + `EXPIRE` per request, a limit high enough never to
//!   refuse, so every request does the full work);
//! - **off** (the baseline): `unauthenticated_for_benchmarks` set, which
//!   only code can set: every request runs as a fixed caller, no token or
//!   key is read, no Redis call is made.
//!
//! Both receive byte-identical requests (the off gateway ignores the
//! token), from one HTTP client, closed loop at a fixed concurrency. Rounds
//! alternate which side goes first (on/off, off/on, ...), so drift over the
//! run (the task table and the stream growing) falls on both alike.
//!
//! Routes: `POST /v1/agents/{agent}/tasks`, the route the rate limit
//! guards (the target: overhead under 10%), with no worker running, so
//! the cost measured is the submission's (validation, the orchestrator's
//! transaction, the outbox, JetStream), not task execution; and
//! `GET /v1/schemas/agent`, which never leaves the gateway: the worst case
//! for the ratio, as auth is then most of the work. Last, where the time
//! goes: HS256 verification against decoding the same claims unverified.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use mesh_auth::{Principal, Role};
use mesh_integration::{Mesh, MeshOptions, fresh_postgres};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TENANT: &str = "bench-auth";
const AGENT: &str = "bench-auth";
/// High enough never to refuse within the run, so every request on the
/// authenticated side pays for the whole Redis count.
const SUBMIT_RATE_PER_MINUTE: u32 = 10_000_000;
const ROUNDS: usize = 6;
const WARMUP: usize = 200;

#[derive(Clone, Copy, PartialEq)]
enum Side {
    On,
    Off,
}

struct Route {
    label: &'static str,
    /// Requests per side (split over the rounds).
    n: usize,
    expect: reqwest::StatusCode,
    /// The route the issue's target is about.
    target: bool,
    request: fn(&reqwest::Client, &str, &str, usize) -> reqwest::RequestBuilder,
}

fn submit(http: &reqwest::Client, base: &str, token: &str, i: usize) -> reqwest::RequestBuilder {
    http.post(format!("{base}/v1/agents/{AGENT}/tasks"))
        .bearer_auth(token)
        .json(&json!({ "input": format!("auth bench {i}") }))
}

fn schema(http: &reqwest::Client, base: &str, token: &str, _: usize) -> reqwest::RequestBuilder {
    http.get(format!("{base}/v1/schemas/agent"))
        .bearer_auth(token)
}

pub async fn run(n: usize, concurrency: usize) -> anyhow::Result<()> {
    let redis_url = mesh_integration::infra::redis_url();
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(fresh_postgres().await?),
        start_worker: false,
        redis_url: Some(redis_url.clone()),
        submit_rate_per_minute: SUBMIT_RATE_PER_MINUTE,
        ..Default::default()
    })
    .await?;
    let on_base = format!("http://{}", mesh.gateway.http_addr);
    let admin = mesh.token(TENANT, &[Role::Admin]);
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(concurrency)
        .build()?;

    // Setup through the authenticated gateway: the agent, and a tenant
    // quota the run stays under (the orchestrator's own limit is not what
    // this measures).
    mesh.client(TENANT).apply_sim_agent(AGENT, 4).await?;
    let quota = http
        .put(format!("{on_base}/v1/quotas"))
        .bearer_auth(&admin)
        .json(&json!({ "tasksPerMinute": 10_000_000 }))
        .send()
        .await?;
    if !quota.status().is_success() {
        bail!(
            "raise the quota: {} {}",
            quota.status(),
            quota.text().await?
        );
    }

    // The baseline gateway: same build, same orchestrator, auth off.
    let orchestrator = mesh
        .orchestrator
        .as_ref()
        .context("the mesh runs an orchestrator")?;
    let mut config = gateway::Config::ephemeral(
        mesh.shared.clone(),
        format!("http://{}", orchestrator.grpc_addr),
        mesh_integration::TEST_JWT_SECRET,
    )?;
    config.submit_rate_per_minute = 0;
    config.unauthenticated_for_benchmarks = Some(Principal {
        tenant: TENANT.to_owned(),
        subject: "bench".to_owned(),
        roles: vec![Role::User],
    });
    let off_stop = CancellationToken::new();
    let _off_stop_on_drop = off_stop.clone().drop_guard();
    let off = gateway::start(config, off_stop).await?;
    let off_base = format!("http://{}", off.http_addr);

    // A user's token, the role the routes need.
    let token = mesh.token(TENANT, &[Role::User]);
    let routes = [
        Route {
            label: "POST /v1/agents/{agent}/tasks (JWT + Redis rate limit)",
            n,
            expect: reqwest::StatusCode::ACCEPTED,
            target: true,
            request: submit,
        },
        Route {
            label: "GET /v1/schemas/agent (JWT; gateway only)",
            n: n * 5,
            expect: reqwest::StatusCode::OK,
            target: false,
            request: schema,
        },
    ];
    let limiter_errors_before = limiter_errors(&http, &mesh).await?;
    println!(
        "two gateways, one orchestrator on PostgreSQL, Redis at {redis_url}, no worker; \
         closed loop, {concurrency} in flight, {ROUNDS} rounds alternating which side goes first"
    );
    println!(
        "  {:<56} {:>7} {:>12} {:>12} {:>10}",
        "route", "n/side", "auth on /s", "auth off /s", "overhead"
    );
    let mut submit_overhead = None;
    for route in &routes {
        let on = |i| (route.request)(&http, &on_base, &token, i);
        let off = |i| (route.request)(&http, &off_base, &token, i);
        // Warm both: connections, the orchestrator's caches, the JIT-less
        // but cold code paths.
        drive(WARMUP, concurrency, route.expect, &on).await?;
        drive(WARMUP, concurrency, route.expect, &off).await?;
        let per_round = (route.n / ROUNDS).max(1);
        let mut elapsed = [Duration::ZERO; 2];
        let mut rounds: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 {
                [Side::On, Side::Off]
            } else {
                [Side::Off, Side::On]
            };
            for side in order {
                let took = match side {
                    Side::On => drive(per_round, concurrency, route.expect, &on).await?,
                    Side::Off => drive(per_round, concurrency, route.expect, &off).await?,
                };
                let k = usize::from(side == Side::Off);
                elapsed[k] += took;
                rounds[k].push(per_round as f64 / took.as_secs_f64());
            }
        }
        let total = (per_round * ROUNDS) as f64;
        let rate_on = total / elapsed[0].as_secs_f64();
        let rate_off = total / elapsed[1].as_secs_f64();
        // The throughput authentication costs: 1 - on/off.
        let overhead = 1.0 - rate_on / rate_off;
        println!(
            "  {:<56} {:>7} {:>12.0} {:>12.0} {:>9.1}%",
            route.label,
            per_round * ROUNDS,
            rate_on,
            rate_off,
            overhead * 100.0
        );
        println!(
            "  {:<56} rounds on {} | off {}",
            "",
            spread(&rounds[0]),
            spread(&rounds[1])
        );
        if route.target {
            submit_overhead = Some(overhead);
        }
    }
    let limiter_errors = limiter_errors(&http, &mesh).await? - limiter_errors_before;
    if limiter_errors > 0.0 {
        bail!(
            "{limiter_errors} rate-limit checks failed open (Redis did not answer): the authenticated side skipped work, the comparison is void"
        );
    }
    if let Some(overhead) = submit_overhead {
        println!(
            "  target: auth + rate limit cost the submit route under 10% of its throughput: {} ({:.1}%)",
            if overhead < 0.10 { "PASS" } else { "MISS" },
            overhead * 100.0
        );
    }
    println!();
    verify_cost(100_000)
}

/// `n` requests made by `request`, `concurrency` in flight; fails on any
/// answer but `expect`. Returns the wall time.
async fn drive<F>(
    n: usize,
    concurrency: usize,
    expect: reqwest::StatusCode,
    request: &F,
) -> anyhow::Result<Duration>
where
    F: Fn(usize) -> reqwest::RequestBuilder,
{
    let (_, took) = super::closed_loop(n, concurrency, |i| async move {
        let response = request(i).send().await?;
        let status = response.status();
        // Read the whole body: the client's cost is the same both sides.
        let body = response.bytes().await?;
        if status != expect {
            bail!(
                "expected {expect}, got {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    })
    .await?;
    Ok(took)
}

/// `min..max` of the per-round rates.
fn spread(rates: &[f64]) -> String {
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let max = rates.iter().copied().fold(0.0, f64::max);
    format!("{min:.0}..{max:.0}/s")
}

/// The authenticated gateway's `gateway_ratelimit_errors` counter: checks
/// that failed open because Redis did not answer.
async fn limiter_errors(http: &reqwest::Client, mesh: &Mesh) -> anyhow::Result<f64> {
    let url = format!("http://{}/metrics", mesh.gateway.admin_addr);
    super::metric(http, &url, "gateway_ratelimit_errors").await
}

/// Decodes unpadded base64url, the encoding of JWT segments.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in input.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = ((acc << 6) | u32::from(v)) & 0xffff;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

/// The claims of a token, read without checking its signature or expiry.
fn unverified_claims(token: &str) -> Option<Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&base64url_decode(payload)?).ok()
}

fn ns_per_op(iterations: usize, mut op: impl FnMut()) -> f64 {
    for _ in 0..iterations.min(1000) {
        op();
    }
    let started = Instant::now();
    for _ in 0..iterations {
        op();
    }
    started.elapsed().as_secs_f64() * 1e9 / iterations as f64
}

/// Where the JWT's share of the time goes: HS256 verification of one token
/// against reading the same claims unverified, one thread.
fn verify_cost(iterations: usize) -> anyhow::Result<()> {
    let secret = b"bench-secret-0123456789abcdef-0123456789";
    let token = mesh_auth::issue_hs256(secret, TENANT, "bench-user", &[Role::User], 3600)?;
    let verifier = mesh_auth::Verifier::hs256(secret, 30);
    // Both sides must read the same claims, or the comparison is void.
    let principal = verifier.verify(&token)?;
    let claims = unverified_claims(&token).context("token payload does not decode")?;
    if claims["tenant"] != principal.tenant.as_str() || claims["sub"] != principal.subject.as_str()
    {
        bail!("unverified claims {claims} disagree with the verified principal {principal:?}");
    }
    let decode = ns_per_op(iterations, || {
        black_box(unverified_claims(black_box(&token)));
    });
    let verify = ns_per_op(iterations, || {
        black_box(verifier.verify(black_box(&token)).ok());
    });
    println!(
        "  where the JWT's time goes ({iterations} iterations, one thread, a {}-byte token):",
        token.len()
    );
    println!("    base64url decode + parse, unverified (baseline) {decode:>8.0} ns");
    println!(
        "    Verifier::hs256(secret, 30).verify(token)       {verify:>8.0} ns ({:.1}x)",
        verify / decode
    );
    Ok(())
}
