//! The mesh benchmarks: one binary with named scenarios, each printing its
//! figures next to a baseline measured in the same run, on the same
//! machine and (where it applies) the same nats-server, and the ratio.
//!
//! ```text
//! cargo bench -p mesh-integration --bench mesh -- [SCENARIO...] [--n N] [--concurrency C]
//! cargo bench -p mesh-integration --bench mesh -- --list
//! ```
//!
//! No argument runs every implemented scenario. A scenario whose issue has
//! not landed says so and prints no figures: this binary never invents a
//! number. Percentiles are nearest-rank over the sorted samples. Targets
//! are reported as PASS or MISS; a miss does not fail the process, an
//! incorrect result (a task that did not succeed) does.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use async_nats::jetstream::{self, AckKind};
use futures::{StreamExt as _, TryStreamExt as _};
use mesh_integration::{Mesh, MeshOptions, RestClient, fresh_postgres};
use mesh_proto::TaskEvent;
use mesh_proto::task_event::Kind;
use prost::Message as _;
use serde_json::Value;
use tokio::sync::oneshot;

#[path = "mesh/router.rs"]
mod router;

#[path = "mesh/retrieval.rs"]
mod retrieval;

#[path = "mesh/agent_loop.rs"]
mod agent_loop;

#[path = "mesh/auth.rs"]
mod auth;

#[path = "mesh/traces_big.rs"]
mod traces_big;

// === scenarios ===

struct Scenario {
    name: &'static str,
    about: &'static str,
    /// `Some(issue)`: not implemented until that issue lands.
    pending: Option<&'static str>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "tasks",
        about: "REST submit -> orchestrator -> JetStream -> worker -> router -> simulator -> events, vs raw JetStream publish/pull/ack",
        pending: None,
    },
    Scenario {
        name: "router",
        about: "router's added latency (p50/p99) over the simulator called directly at several concurrencies, the highest rate with added p99 under 1 ms, and LiteLLM's proxy as the peer",
        pending: None,
    },
    Scenario {
        name: "auth",
        about: "gateway requests/s on one route with JWT validation and the Redis rate limit on vs the same route with auth off (target: under 10% overhead); HS256 verify vs unverified decode",
        pending: None,
    },
    Scenario {
        name: "agent-loop",
        about: "tasks of three tool steps (simulator + local HTTP tool): steps/s and the worker's per-step overhead vs the bare tool and model calls",
        pending: None,
    },
    Scenario {
        name: "retrieval",
        about: "recall@10 and queries/s on 100k x 384 clustered vectors: HNSW in-process and through gRPC vs exact search; ingest rates",
        pending: None,
    },
    Scenario {
        name: "traces",
        about: "OTLP/HTTP spans/s to durable enqueue and spans/s stored by one writer on PostgreSQL, vs raw JetStream publish and raw batched INSERT",
        pending: None,
    },
    Scenario {
        name: "scale",
        about: "drain time of a queued burst at one agent with 1, 2 and 4 worker replicas (speed-up curve)",
        pending: None,
    },
];

const USAGE: &str = "usage: cargo bench -p mesh-integration --bench mesh -- [SCENARIO...] [--n N] [--concurrency C] [--list]";

#[derive(Debug, Default)]
struct Args {
    scenarios: Vec<&'static str>,
    n: Option<usize>,
    concurrency: Option<usize>,
    list: bool,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    fn count(flag: &str, value: Option<String>) -> anyhow::Result<usize> {
        let value = value.with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        value
            .parse::<usize>()
            .ok()
            .filter(|v| *v > 0)
            .with_context(|| format!("{flag}: {value:?} is not a positive integer"))
    }
    let mut parsed = Args::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if arg.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            // `cargo bench` passes `--bench` to every harness-less bench.
            "--bench" => {}
            "--list" => parsed.list = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                parsed.list = true;
            }
            "--n" => parsed.n = Some(count("--n", inline.or_else(|| args.next()))?),
            "--concurrency" | "-c" => {
                parsed.concurrency = Some(count("--concurrency", inline.or_else(|| args.next()))?);
            }
            other if other.starts_with('-') => bail!("unknown flag {other:?}\n{USAGE}"),
            name => {
                let scenario = SCENARIOS
                    .iter()
                    .find(|s| s.name == name)
                    .with_context(|| format!("unknown scenario {name:?}; try --list"))?;
                parsed.scenarios.push(scenario.name);
            }
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args(std::env::args().skip(1))?;
    if args.list {
        for s in SCENARIOS {
            let state = s.pending.map_or_else(String::new, |issue| {
                format!(" (not implemented yet: {issue})")
            });
            println!("{:<11} {}{state}", s.name, s.about);
        }
        return Ok(());
    }
    let selected: Vec<&Scenario> = if args.scenarios.is_empty() {
        SCENARIOS.iter().filter(|s| s.pending.is_none()).collect()
    } else {
        SCENARIOS
            .iter()
            .filter(|s| args.scenarios.contains(&s.name))
            .collect()
    };
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "agentmesh bench: {cores} cores, tokio multi-thread runtime shared by the bench and every in-process service"
    );
    for scenario in selected {
        println!();
        println!("== {} == {}", scenario.name, scenario.about);
        if let Some(issue) = scenario.pending {
            println!("not implemented yet: {issue}");
            continue;
        }
        match scenario.name {
            "tasks" => tasks(args.n.unwrap_or(2000), args.concurrency.unwrap_or(64)).await?,
            "router" => router::run(args.n.unwrap_or(2000), args.concurrency).await?,
            "auth" => auth::run(args.n.unwrap_or(3000), args.concurrency.unwrap_or(32)).await?,
            "scale" => scale(args.n.unwrap_or(500), args.concurrency.unwrap_or(4)).await?,
            "traces" => traces(args.n.unwrap_or(20_000), args.concurrency.unwrap_or(8)).await?,
            "retrieval" => retrieval::run(args.n.unwrap_or(100_000), 1000).await?,
            "agent-loop" => {
                agent_loop::run(args.n.unwrap_or(400), args.concurrency.unwrap_or(32)).await?
            }
            other => bail!("scenario {other} has no runner"),
        }
    }
    Ok(())
}

// === statistics and printing ===

#[derive(Debug, Clone, Copy)]
struct Stats {
    n: usize,
    p50: Duration,
    p90: Duration,
    p99: Duration,
    max: Duration,
}

impl Stats {
    fn of(mut samples: Vec<Duration>) -> Self {
        assert!(!samples.is_empty(), "no samples");
        samples.sort_unstable();
        // Nearest rank: the smallest sample with at least p% at or below it.
        let at = |p: f64| {
            let rank = (p / 100.0 * samples.len() as f64).ceil() as usize;
            samples[rank.clamp(1, samples.len()) - 1]
        };
        Self {
            n: samples.len(),
            p50: at(50.0),
            p90: at(90.0),
            p99: at(99.0),
            max: samples[samples.len() - 1],
        }
    }
}

fn fmt_duration(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0} µs")
    } else {
        format!("{:.2} ms", micros / 1000.0)
    }
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

/// One line of a latency table; `rate` is per second over the whole run.
struct Row {
    label: String,
    stats: Stats,
    rate: Option<(f64, &'static str)>,
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.label.len()).max().unwrap_or(0).max(4);
    println!(
        "  {:<width$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>14}",
        "what", "n", "p50", "p90", "p99", "max", "throughput"
    );
    for row in rows {
        let rate = row.rate.map_or_else(
            || "-".to_owned(),
            |(rate, unit)| format!("{rate:.0} {unit}"),
        );
        println!(
            "  {:<width$} {:>6} {:>10} {:>10} {:>10} {:>10} {:>14}",
            row.label,
            row.stats.n,
            fmt_duration(row.stats.p50),
            fmt_duration(row.stats.p90),
            fmt_duration(row.stats.p99),
            fmt_duration(row.stats.max),
            rate,
        );
    }
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

/// Runs `n` operations with at most `concurrency` in flight (closed loop:
/// a slot frees when its operation has finished), and the wall time.
async fn closed_loop<T, F, Fut>(
    n: usize,
    concurrency: usize,
    op: F,
) -> anyhow::Result<(Vec<T>, Duration)>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let started = Instant::now();
    let results = futures::stream::iter(0..n)
        .map(op)
        .buffer_unordered(concurrency)
        .try_collect()
        .await?;
    Ok((results, started.elapsed()))
}

// === arrivals: matching an id with the time its completion was seen ===

enum Slot {
    Waiting(oneshot::Sender<Result<Instant, String>>),
    Arrived(Result<Instant, String>),
}

/// Completions keyed by id. The completion may be seen before the
/// submitter knows the id (the POST answer can lose the race), so either
/// side may come first.
#[derive(Default)]
struct Arrivals {
    slots: Mutex<HashMap<String, Slot>>,
}

impl Arrivals {
    fn arrive(&self, id: String, outcome: Result<Instant, String>) {
        let mut slots = self.slots.lock().expect("arrivals lock");
        match slots.remove(&id) {
            Some(Slot::Waiting(waiter)) => {
                let _ = waiter.send(outcome);
            }
            // A redelivered duplicate replaces an unclaimed arrival; the
            // first one was already claimed otherwise.
            _ => {
                slots.insert(id, Slot::Arrived(outcome));
            }
        }
    }

    async fn wait(&self, id: &str, timeout: Duration) -> anyhow::Result<Instant> {
        let receiver = {
            let mut slots = self.slots.lock().expect("arrivals lock");
            match slots.remove(id) {
                Some(Slot::Arrived(outcome)) => return outcome.map_err(anyhow::Error::msg),
                _ => {
                    let (tx, rx) = oneshot::channel();
                    slots.insert(id.to_owned(), Slot::Waiting(tx));
                    rx
                }
            }
        };
        tokio::time::timeout(timeout, receiver)
            .await
            .with_context(|| format!("{id} did not complete within {timeout:?}"))?
            .context("arrivals dropped")?
            .map_err(|reason| anyhow::anyhow!("{id} did not succeed: {reason}"))
    }
}

// === tasks ===

const TENANT: &str = "bench";
const AGENT: &str = "bench";
const MAX_TOKENS: u32 = 4;
const WARMUP: usize = 100;
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// The event stream as the bench sees it, over core NATS: completion
/// times per task and the time of each task's first `started` event.
#[derive(Default)]
struct EventWatch {
    completed: Arrivals,
    started: Mutex<HashMap<String, Instant>>,
    events: AtomicU64,
}

struct TaskSample {
    id: String,
    submitted: Instant,
    accepted: Duration,
    done: Duration,
}

async fn tasks(n: usize, concurrency: usize) -> anyhow::Result<()> {
    let database_url = fresh_postgres().await?;
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(database_url.clone()),
        ..Default::default()
    })
    .await?;

    // Baselines first, on the same nats-server while the mesh idles.
    println!(
        "baseline: raw JetStream on the same nats-server, file storage, work-queue stream BENCH, one durable pull consumer"
    );
    let raw_seq = raw_jetstream(&mesh.nats.url, "seq", n, 1).await?;
    let raw = raw_jetstream(&mesh.nats.url, "conc", n, concurrency).await?;
    // The durable part of a submit: one transaction committed before the 202.
    let raw_commit = raw_postgres_commit(&database_url, n.min(1000)).await?;

    let client = mesh.client(TENANT);
    client.apply_sim_agent(AGENT, MAX_TOKENS).await?;
    let watch = Arc::new(EventWatch::default());
    let mut subscription = mesh
        .bus
        .client()
        .subscribe(format!("events.{TENANT}.>"))
        .await?;
    // The subscription must be in place on the server before any submit.
    mesh.bus.client().flush().await?;
    let collector = {
        let watch = watch.clone();
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let at = Instant::now();
                watch.events.fetch_add(1, Ordering::Relaxed);
                let event = match TaskEvent::decode(message.payload) {
                    Ok(event) => event,
                    Err(error) => {
                        eprintln!("undecodable event on {}: {error}", message.subject);
                        continue;
                    }
                };
                match event.kind {
                    Some(Kind::Started(_)) => {
                        watch
                            .started
                            .lock()
                            .expect("started lock")
                            .entry(event.task_id)
                            .or_insert(at);
                    }
                    Some(Kind::Completed(_)) => watch.completed.arrive(event.task_id, Ok(at)),
                    Some(Kind::Failed(failed)) => watch
                        .completed
                        .arrive(event.task_id, Err(format!("failed: {}", failed.error))),
                    Some(Kind::Cancelled(_)) => {
                        watch
                            .completed
                            .arrive(event.task_id, Err("cancelled".to_owned()));
                    }
                    _ => {}
                }
            }
        })
    };

    let mut submitted_so_far = 0;
    let mut run = |count: usize, in_flight: usize| {
        let client = client.clone();
        let watch = watch.clone();
        let offset = submitted_so_far;
        submitted_so_far += count;
        closed_loop(count, in_flight, move |i| {
            let client = client.clone();
            let watch = watch.clone();
            async move {
                let submitted = Instant::now();
                let id = client
                    .submit(AGENT, &format!("bench task {}", offset + i))
                    .await?;
                let accepted = submitted.elapsed();
                let done_at = watch.completed.wait(&id, TASK_TIMEOUT).await?;
                Ok(TaskSample {
                    id,
                    submitted,
                    accepted,
                    done: done_at.saturating_duration_since(submitted),
                })
            }
        })
    };
    // The unloaded path, to separate its length from queueing under load.
    let n_seq = (n / 10).clamp(1, 200);
    println!(
        "mesh: {WARMUP} warm-up tasks (not measured), then {n_seq} tasks one at a time, then {n} tasks with {concurrency} in flight (closed loop: submit, wait for the `completed` event, next); max_tokens {MAX_TOKENS}, simulator at zero latency"
    );
    run(WARMUP, concurrency).await.context("warm-up")?;
    let (seq_samples, _) = run(n_seq, 1).await?;
    let events_before = watch.events.load(Ordering::Relaxed);
    let cpu_before = cpu::snapshot();
    let (samples, elapsed) = run(n, concurrency).await?;
    let cpu_used = cpu::since(&cpu_before);
    let events = watch.events.load(Ordering::Relaxed) - events_before;
    let last_completed = samples
        .iter()
        .map(|s| s.submitted + s.done)
        .max()
        .context("no samples")?;

    // Projection: the rows lag the completed event; measure by how much,
    // once, at the end, and hold the result to account.
    let expected = submitted_so_far;
    let deadline = Instant::now() + Duration::from_secs(60);
    let succeeded = loop {
        let succeeded = count_tasks(&client, "succeeded").await?;
        if succeeded >= expected || Instant::now() > deadline {
            break succeeded;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let drained = last_completed.elapsed();
    let all = count_tasks(&client, "").await?;
    collector.abort();
    if succeeded != expected || all != expected {
        bail!(
            "database has {succeeded} succeeded of {all} tasks for agent {AGENT}; expected {expected} succeeded"
        );
    }
    let sample = client.task(&samples[0].id).await?;
    if sample["status"] != "succeeded" || sample["usage"]["outputTokens"] != MAX_TOKENS {
        bail!("sample task is not a finished {MAX_TOKENS}-token answer: {sample}");
    }

    let started = watch.started.lock().expect("started lock").clone();
    let phases = |samples: &[TaskSample]| {
        let queue_wait = samples
            .iter()
            .filter_map(|s| {
                started
                    .get(&s.id)
                    .map(|t| t.saturating_duration_since(s.submitted))
            })
            .collect();
        let running = samples
            .iter()
            .filter_map(|s| {
                started
                    .get(&s.id)
                    .map(|t| (s.submitted + s.done).saturating_duration_since(*t))
            })
            .collect();
        (
            Stats::of(samples.iter().map(|s| s.accepted).collect()),
            Stats::of(queue_wait),
            Stats::of(running),
        )
    };
    let mesh_rate = n as f64 / elapsed.as_secs_f64();
    let mesh_seq = Stats::of(seq_samples.iter().map(|s| s.done).collect());
    let mesh = Stats::of(samples.iter().map(|s| s.done).collect());
    let (seq_post, seq_queue, seq_run) = phases(&seq_samples);
    let (post, queue, running) = phases(&samples);
    let part = |label: &str, stats: Stats| Row {
        label: format!("  {label}"),
        stats,
        rate: None,
    };
    print_table(&[
        Row {
            label: "raw JetStream round trip, 1 in flight".to_owned(),
            stats: raw_seq.round_trip,
            rate: Some((raw_seq.rate, "msg/s")),
        },
        part("of which publish ack", raw_seq.publish),
        Row {
            label: "raw PostgreSQL insert + commit, 1 in flight".to_owned(),
            stats: raw_commit,
            rate: None,
        },
        Row {
            label: "mesh submit -> completed, 1 in flight".to_owned(),
            stats: mesh_seq,
            rate: None,
        },
        part("of which POST answered (202)", seq_post),
        part("of which submit -> started event", seq_queue),
        part("of which started -> completed event", seq_run),
        Row {
            label: format!("raw JetStream round trip, {concurrency} in flight"),
            stats: raw.round_trip,
            rate: Some((raw.rate, "msg/s")),
        },
        part("of which publish ack", raw.publish),
        Row {
            label: format!("mesh submit -> completed, {concurrency} in flight"),
            stats: mesh,
            rate: Some((mesh_rate, "tasks/s")),
        },
        part("of which POST answered (202)", post),
        part("of which submit -> started event", queue),
        part("of which started -> completed event", running),
    ]);
    println!(
        "  {events} events for {n} tasks ({:.1} per task); last completed event -> all {expected} tasks succeeded in PostgreSQL (projection drain): {}",
        events as f64 / n as f64,
        fmt_duration(drained)
    );
    println!(
        "  verified over REST: {succeeded} of {all} tasks of agent {AGENT} are succeeded ({WARMUP} warm-up + {n_seq} + {n} measured)"
    );
    if let Some(cpu_used) = cpu_used {
        cpu::print(&cpu_used, elapsed);
    }
    let seq_p50 = ratio(mesh_seq.p50, raw_seq.round_trip.p50);
    let seq_p99 = ratio(mesh_seq.p99, raw_seq.round_trip.p99);
    let p50 = ratio(mesh.p50, raw.round_trip.p50);
    let p99 = ratio(mesh.p99, raw.round_trip.p99);
    println!("  mesh / raw, 1 in flight: p50 {seq_p50:.1}x, p99 {seq_p99:.1}x");
    println!("  mesh / raw, {concurrency} in flight: p50 {p50:.1}x, p99 {p99:.1}x");
    println!(
        "  target: mesh p50 within 10x the raw JetStream round trip: 1 in flight {seq_p50:.1}x {}; {concurrency} in flight {p50:.1}x {}",
        verdict(seq_p50 <= 10.0),
        verdict(p50 <= 10.0)
    );
    println!(
        "  target: >= 500 tasks/s ({concurrency} in flight): {mesh_rate:.0} tasks/s {}",
        verdict(mesh_rate >= 500.0)
    );
    Ok(())
}

/// Counts the agent's tasks with `status` ("" for all) over the paginated
/// REST list.
async fn count_tasks(client: &RestClient, status: &str) -> anyhow::Result<usize> {
    let mut count = 0;
    let mut cursor = String::new();
    loop {
        let mut path = format!("/v1/tasks?agent={AGENT}&limit=500");
        if !status.is_empty() {
            path.push_str(&format!("&status={status}"));
        }
        if !cursor.is_empty() {
            path.push_str(&format!("&cursor={cursor}"));
        }
        let response = client.get(&path).send().await?;
        let http_status = response.status();
        let page: Value = response.json().await?;
        if !http_status.is_success() {
            bail!("list tasks: {http_status} {page}");
        }
        count += page["tasks"].as_array().map_or(0, Vec::len);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return Ok(count),
        }
    }
}

struct RawRun {
    round_trip: Stats,
    publish: Stats,
    rate: f64,
}

/// Publish (awaiting the stream's ack) -> pulled by a durable consumer ->
/// acked, `m` times with `concurrency` in flight; the consumer pulls and
/// acks the way the agent-worker does (batch = concurrency, explicit ack).
async fn raw_jetstream(
    url: &str,
    label: &str,
    m: usize,
    concurrency: usize,
) -> anyhow::Result<RawRun> {
    let client = async_nats::connect(url).await?;
    let js = jetstream::new(client);
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: "BENCH".to_owned(),
            subjects: vec!["bench.>".to_owned()],
            retention: jetstream::stream::RetentionPolicy::WorkQueue,
            storage: jetstream::stream::StorageType::File,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await?;
    // Work-queue consumers may not overlap: one filter per run.
    let subject = format!("bench.{label}");
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some(format!("bench-{label}")),
            filter_subject: subject.clone(),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            ..Default::default()
        })
        .await?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(concurrency)
        .messages()
        .await?;
    let arrivals = Arc::new(Arrivals::default());
    let receiver = {
        let arrivals = arrivals.clone();
        tokio::spawn(messages.for_each_concurrent(concurrency, move |message| {
            let arrivals = arrivals.clone();
            async move {
                let message = match message {
                    Ok(message) => message,
                    Err(error) => return eprintln!("bench pull error: {error}"),
                };
                let id = String::from_utf8_lossy(&message.payload).into_owned();
                let outcome = match message.ack_with(AckKind::Ack).await {
                    Ok(()) => Ok(Instant::now()),
                    Err(error) => Err(format!("ack: {error}")),
                };
                arrivals.arrive(id, outcome);
            }
        }))
    };
    let run = |count: usize, prefix: &'static str| {
        let js = js.clone();
        let arrivals = arrivals.clone();
        let subject = subject.clone();
        closed_loop(count, concurrency, move |i| {
            let js = js.clone();
            let arrivals = arrivals.clone();
            let subject = subject.clone();
            async move {
                let id = format!("{prefix}-{i}");
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
                let started = Instant::now();
                js.publish_with_headers(subject, headers, id.clone().into())
                    .await?
                    .await?;
                let published = started.elapsed();
                let acked = arrivals.wait(&id, Duration::from_secs(30)).await?;
                anyhow::Ok((published, acked.saturating_duration_since(started)))
            }
        })
    };
    run(WARMUP, "warm").await?;
    let (samples, elapsed) = run(m, "m").await?;
    receiver.abort();
    println!(
        "  raw {label}: {WARMUP} warm-up messages, then {m} with {concurrency} in flight (closed loop), done in {}",
        fmt_duration(elapsed)
    );
    Ok(RawRun {
        publish: Stats::of(samples.iter().map(|s| s.0).collect()),
        round_trip: Stats::of(samples.iter().map(|s| s.1).collect()),
        rate: m as f64 / elapsed.as_secs_f64(),
    })
}

// === CPU accounting ===

/// CPU time by process name over a window, read from Linux `/proc`: shows
/// which process the cores went to (this one, which runs the bench and
/// every service; PostgreSQL's backends; nats-server). Absent elsewhere.
mod cpu {
    use std::collections::HashMap;
    use std::time::Duration;

    /// Units of `utime` and `stime` in `/proc/<pid>/stat` (USER_HZ).
    const TICKS_PER_SECOND: f64 = 100.0;
    const SELF_LABEL: &str = "this process (bench + services)";

    pub struct Snapshot {
        processes: HashMap<u32, (String, u64)>,
        /// Machine-wide (busy, total) ticks from `/proc/stat`.
        machine: (u64, u64),
    }

    fn machine() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let ticks: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal
        let total: u64 = ticks.iter().sum();
        let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
        Some((total - idle, total))
    }

    pub fn snapshot() -> Option<Snapshot> {
        let machine = machine()?;
        let own = std::process::id();
        let mut processes = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Gone since the listing: skip it.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // The name is in parentheses and may hold anything; the fields
            // resume after the last ')' with field 3 (state).
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                continue;
            };
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            // utime and stime: fields 14 and 15.
            let used = ticks(11) + ticks(12);
            let name = if pid == own {
                SELF_LABEL.to_owned()
            } else {
                stat[open + 1..close].to_owned()
            };
            processes.insert(pid, (name, used));
        }
        Some(Snapshot { processes, machine })
    }

    pub struct Used {
        /// Seconds of CPU per process name, most first.
        pub by_name: Vec<(String, f64)>,
        /// Share of the machine's CPU time that was not idle.
        pub busy: f64,
    }

    /// CPU used since `before`.
    pub fn since(before: &Option<Snapshot>) -> Option<Used> {
        let before = before.as_ref()?;
        let after = snapshot()?;
        let mut by_name: HashMap<String, u64> = HashMap::new();
        for (pid, (name, used)) in after.processes {
            let earlier = match before.processes.get(&pid) {
                Some((earlier_name, earlier)) if *earlier_name == name => *earlier,
                _ => 0,
            };
            *by_name.entry(name).or_default() += used.saturating_sub(earlier);
        }
        let mut used: Vec<(String, f64)> = by_name
            .into_iter()
            .filter(|(_, ticks)| *ticks > 0)
            .map(|(name, ticks)| (name, ticks as f64 / TICKS_PER_SECOND))
            .collect();
        used.sort_by(|a, b| b.1.total_cmp(&a.1));
        let busy = after.machine.0.saturating_sub(before.machine.0) as f64;
        let total = after.machine.1.saturating_sub(before.machine.1).max(1) as f64;
        Some(Used {
            by_name: used,
            busy: busy / total,
        })
    }

    /// CPU time so far of each thread of this process whose name starts
    /// with `prefix` (a runtime's `thread_name`), by thread id: the share
    /// of one in-process service when it runs on a runtime of its own.
    /// Nanoseconds from `schedstat` where the kernel has it, else ticks.
    pub fn threads(prefix: &str) -> HashMap<u32, Duration> {
        let mut out = HashMap::new();
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            return out;
        };
        for entry in tasks.flatten() {
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if !comm.starts_with(prefix) {
                continue;
            }
            let scheduled = std::fs::read_to_string(entry.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .map(Duration::from_nanos);
            let ticked = || {
                let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
                let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
                let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
                Some(Duration::from_secs_f64(
                    (ticks(11)? + ticks(12)?) as f64 / TICKS_PER_SECOND,
                ))
            };
            if let Some(used) = scheduled.or_else(ticked) {
                out.insert(tid, used);
            }
        }
        out
    }

    /// CPU used by the threads named `prefix` since `before` (threads that
    /// started since count from zero; one that ended in between is lost,
    /// which a runtime's worker threads never do while it runs).
    pub fn threads_since(prefix: &str, before: &HashMap<u32, Duration>) -> Duration {
        threads(prefix)
            .into_iter()
            .map(|(tid, used)| used.saturating_sub(before.get(&tid).copied().unwrap_or_default()))
            .sum()
    }

    pub fn print(used: &Used, wall: Duration) {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let available = wall.as_secs_f64() * cores as f64;
        let used_by_name = &used.by_name;
        // Per-process ticks are sampled, so their sum can stray from the
        // machine's own count; `busy` comes from /proc/stat.
        let shown: Vec<String> = used_by_name
            .iter()
            .take(4)
            .map(|(name, s)| format!("{name} {s:.2} s ({:.0}%)", s / available * 100.0))
            .collect();
        let rest: f64 = used_by_name.iter().skip(4).map(|(_, s)| s).sum();
        println!(
            "  cpu during the measured run ({:.2} s x {cores} cores = {available:.2} core-s, machine {:.0}% busy): {}, other {rest:.2} s",
            wall.as_secs_f64(),
            used.busy * 100.0,
            shown.join(", "),
        );
    }
}

// === scale ===

/// A burst of `n` tasks queued at one agent, drained by 1, 2 and 4 worker
/// replicas (each its own runtime and NATS connection, `per_worker` tasks
/// at once); the 1-replica drain is the baseline. The simulator streams 8
/// tokens 10 ms apart, so a task takes ~80 ms of model time, like a small
/// real model: the work is waiting, which is what replicas add capacity for.
async fn scale(n: usize, per_worker: usize) -> anyhow::Result<()> {
    let mesh = Mesh::start(MeshOptions {
        database_url: Some(fresh_postgres().await?),
        start_worker: false,
        sim: model_sim::SimConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            inter_token: Duration::from_millis(10),
            ..Default::default()
        },
        ..Default::default()
    })
    .await?;
    let client = mesh.client("bench");
    client.apply_sim_agent("burst", 8).await?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "{n} tasks queued before the workers start; each worker runs {per_worker} at once; simulator: 8 tokens, 10 ms apart; {cores} CPU cores"
    );
    println!(
        "  {:>8}  {:>10}  {:>11}  {:>9}  {:>7}",
        "replicas", "drain", "tasks/s", "speed-up", "ideal"
    );
    let mut baseline: Option<Duration> = None;
    for replicas in [1usize, 2, 4] {
        let mut completed = mesh.bus.client().subscribe("events.bench.>").await?;
        let ids: Vec<String> = futures::stream::iter(0..n)
            .map(|i| {
                let client = client.clone();
                async move { client.submit("burst", &format!("burst {i}")).await }
            })
            .buffer_unordered(32)
            .try_collect()
            .await?;
        let mut config = mesh.worker_config()?;
        config.agents = agent_worker::AgentSelection::Named(vec!["burst".into()]);
        config.concurrency = per_worker;
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..replicas {
            let config = config.clone();
            workers.push(
                tokio::task::spawn_blocking(move || {
                    mesh_integration::IsolatedWorker::spawn(config)
                })
                .await??,
            );
        }
        let mut done = std::collections::HashSet::new();
        while done.len() < n {
            let message = tokio::time::timeout(Duration::from_secs(120), completed.next())
                .await
                .context("the burst stopped draining")?
                .context("event subscription ended")?;
            let event = TaskEvent::decode(message.payload)?;
            if matches!(event.kind, Some(Kind::Completed(_))) {
                done.insert(event.task_id);
            }
        }
        let drain = started.elapsed();
        for worker in workers {
            tokio::task::spawn_blocking(move || worker.drain()).await?;
        }
        if let Some(missing) = ids.iter().find(|id| !done.contains(*id)) {
            bail!("task {missing} never completed");
        }
        let base = *baseline.get_or_insert(drain);
        println!(
            "  {:>8}  {:>10}  {:>11.0}  {:>8.2}x  {:>6}x",
            replicas,
            fmt_duration(drain),
            n as f64 / drain.as_secs_f64(),
            base.as_secs_f64() / drain.as_secs_f64(),
            replicas
        );
    }
    Ok(())
}

/// One INSERT and COMMIT at a time on the mesh's PostgreSQL database: the
/// floor under a submit, which commits the task and its outbox row before
/// answering.
async fn raw_postgres_commit(url: &str, n: usize) -> anyhow::Result<Stats> {
    use sea_orm::{ConnectionTrait as _, TransactionTrait as _};
    let db = sea_orm::Database::connect(url).await?;
    db.execute_unprepared(
        "CREATE TABLE bench_commit (id BIGSERIAL PRIMARY KEY, body TEXT NOT NULL)",
    )
    .await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let txn = db.begin().await?;
        txn.execute_unprepared(&format!(
            "INSERT INTO bench_commit (body) VALUES ('bench task {i}')"
        ))
        .await?;
        txn.commit().await?;
        samples.push(started.elapsed());
    }
    db.close().await?;
    Ok(Stats::of(samples))
}

// === traces ===

/// The attributes of a GenAI span of ~1 KiB: the `chat` spans carry a
/// short prompt the way an agent that allows content recording sends it.
fn bench_span(
    trace_id: &[u8],
    i: usize,
) -> trace_collector::opentelemetry_proto::tonic::trace::v1::Span {
    use trace_collector::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use trace_collector::opentelemetry_proto::tonic::trace::v1::Span;
    let kv = |key: &str, value: any_value::Value| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    };
    let s = |key: &str, value: &str| kv(key, any_value::Value::StringValue(value.to_owned()));
    let int = |key: &str, value: i64| kv(key, any_value::Value::IntValue(value));
    let mut span_id = uuid::Uuid::new_v4().as_bytes()[..8].to_vec();
    span_id[0] |= 1;
    let parent = if i.is_multiple_of(10) {
        Vec::new()
    } else {
        let mut p = trace_id[..8].to_vec();
        p[0] |= 1;
        p
    };
    let mut attributes = vec![
        s("gen_ai.agent.name", "support"),
        s("session.id", "session-4f1c2a"),
        s("user.id", "user-1234"),
    ];
    let name = match i % 10 {
        0 => {
            attributes.push(s("gen_ai.operation.name", "invoke_agent"));
            "invoke_agent support".to_owned()
        }
        1..=3 => {
            attributes.push(s("gen_ai.operation.name", "execute_tool"));
            attributes.push(s("gen_ai.tool.name", "search_orders"));
            attributes.push(s("gen_ai.tool.call.id", "call_7d1b3c9a0f"));
            attributes.push(s(
                "gen_ai.tool.call.arguments",
                r#"{"order_id":"8812","customer_id":"c-55102","fields":["status","carrier","tracking_number","estimated_delivery","last_scan_location","last_scan_time"],"include_history":true,"locale":"en-GB","max_events":20,"reason":"customer asked where the order is"}"#,
            ));
            attributes.push(s(
                "gen_ai.tool.call.result",
                r#"{"status":"in_transit","carrier":"DHL","tracking_number":"JD014600006281234567","estimated_delivery":"2024-11-29","last_scan_location":"Leipzig hub","last_scan_time":"2024-11-25T18:42:00Z"}"#,
            ));
            "execute_tool search_orders".to_owned()
        }
        _ => {
            attributes.extend([
                s("gen_ai.operation.name", "chat"),
                s("gen_ai.provider.name", "openai"),
                s("gen_ai.request.model", "gpt-4o-mini"),
                s("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
                s("gen_ai.response.id", "chatcmpl-9x8y7z6w5v4u3t2s1r"),
                int("gen_ai.usage.input_tokens", 412),
                int("gen_ai.usage.output_tokens", 96),
                kv(
                    "gen_ai.response.finish_reasons",
                    any_value::Value::ArrayValue(
                        trace_collector::opentelemetry_proto::tonic::common::v1::ArrayValue {
                            values: vec![AnyValue {
                                value: Some(any_value::Value::StringValue("stop".to_owned())),
                            }],
                        },
                    ),
                ),
                kv("gen_ai.request.temperature", any_value::Value::DoubleValue(0.2)),
                int("gen_ai.request.max_tokens", 512),
                s(
                    "gen_ai.input.messages",
                    r#"[{"role":"system","parts":[{"type":"text","content":"You are a support agent for an online shop. Answer briefly and cite the order."}]},{"role":"user","parts":[{"type":"text","content":"Where is my order 8812? It was due on Monday and the tracking page has not changed since."}]}]"#,
                ),
                s(
                    "gen_ai.output.messages",
                    r#"[{"role":"assistant","parts":[{"type":"text","content":"Your order 8812 is in transit with DHL (tracking JD014600006281234567). It was last scanned at the Leipzig hub on 25 November and is now expected on 29 November. I am sorry for the delay."}],"finish_reason":"stop"}]"#,
                ),
            ]);
            "chat gpt-4o-mini".to_owned()
        }
    };
    let start = 1_700_000_000_000_000_000_u64 + (i as u64) * 1_000_000;
    Span {
        trace_id: trace_id.to_vec(),
        span_id,
        parent_span_id: parent,
        name,
        start_time_unix_nano: start,
        end_time_unix_nano: start + 250_000_000,
        attributes,
        ..Default::default()
    }
}

/// One OTLP request of `spans` spans (10 spans per trace).
fn bench_batch(
    spans: usize,
) -> trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use trace_collector::opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use trace_collector::opentelemetry_proto::tonic::resource::v1::Resource;
    use trace_collector::opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    let mut trace_id = uuid::Uuid::new_v4().as_bytes().to_vec();
    let spans = (0..spans)
        .map(|i| {
            if i.is_multiple_of(10) {
                trace_id = uuid::Uuid::new_v4().as_bytes().to_vec();
            }
            bench_span(&trace_id, i)
        })
        .collect();
    let text = |key: &str, value: &str| KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    text("service.name", "agent-worker"),
                    text("service.version", "0.1.0"),
                    text("k8s.namespace.name", "ai-agents"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Reads a counter from a Prometheus text page (the sum over its label
/// sets); an error when the page has no such metric, so a renamed counter
/// cannot read as zero.
async fn metric(http: &reqwest::Client, url: &str, name: &str) -> anyhow::Result<f64> {
    let page = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let values: Vec<f64> = page
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .filter(|(key, _)| key.starts_with(name))
        .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
        .collect();
    if values.is_empty() {
        bail!("{url} exports no {name}");
    }
    Ok(values.iter().sum())
}

/// Thread-name prefixes of the runtimes the `traces` scenario gives each
/// part, so `/proc` tells their CPU apart (at most 15 bytes are kept).
const RECEIVER_THREADS: &str = "trc-receiver";
const WRITER_THREADS: &str = "trc-writer";
const RAW_PUBLISH_THREADS: &str = "trc-rawpub";

/// A multi-thread runtime of `threads` workers whose threads are named
/// `name`: a service started on it does all its work there.
fn named_runtime(name: &str, threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name(name)
        .enable_all()
        .build()?)
}

/// The trace-collector on a fresh nats-server and PostgreSQL: `n` spans
/// posted over OTLP/HTTP protobuf in batches of 100 (~1 KiB each),
/// `concurrency` requests in flight, each answered once its batch is
/// durable on TRACES; meanwhile one writer (one replica, its default
/// concurrency) stores them. Two collector replicas, as a deployment that
/// scales them apart would run them: a receiver-only one (writer
/// concurrency 0) that the requests go to, and one whose writer stores
/// them; each on a tokio runtime of its own, so the CPU of each is read
/// per thread from `/proc` apart from the bench's HTTP client (on the main
/// runtime) and from each other. Receiver rate: spans answered per second
/// (the writer runs beside it on the same cores, so this is pessimistic);
/// writer rate: spans stored per second from the first request to the
/// last row. Baselines, same run: raw JetStream publish of the same
/// request bytes (awaiting the stream's ack), and raw 100-row INSERTs of
/// the same rows into a plain table.
async fn traces(n: usize, concurrency: usize) -> anyhow::Result<()> {
    use trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    const BATCH: usize = 100;
    let batches = n.div_ceil(BATCH).max(1);
    let n = batches * BATCH;
    let bodies: Vec<Vec<u8>> = (0..batches)
        .map(|_| bench_batch(BATCH).encode_to_vec())
        .collect();
    let bytes_per_span = bodies.iter().map(Vec::len).sum::<usize>() / n;

    let nats = mesh_integration::Nats::start()?;
    let database_url = fresh_postgres().await?;
    let mut shared = mesh_integration::mesh::test_shared_config()?;
    shared.nats_url = nats.url.clone();
    shared.database_url = Some(database_url.clone());
    let data = tempfile::tempdir()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let writer_config = trace_collector::Config::ephemeral(shared.clone(), data.path().to_owned())?;
    let writer_concurrency = writer_config.writer_concurrency;
    let mut receiver_config = trace_collector::Config::ephemeral(shared, data.path().to_owned())?;
    receiver_config.writer_concurrency = 0;
    let stop = tokio_util::sync::CancellationToken::new();
    let writer_runtime = named_runtime(WRITER_THREADS, cores)?;
    let receiver_runtime = named_runtime(RECEIVER_THREADS, cores)?;
    // One after the other: both migrate the same database.
    let writer = writer_runtime
        .spawn(trace_collector::start(writer_config, stop.clone()))
        .await??;
    let receiver = receiver_runtime
        .spawn(trace_collector::start(receiver_config, stop.clone()))
        .await??;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let export_url = format!("http://{}/v1/traces", receiver.http_addr);
    let metrics_url = format!("http://{}/metrics", writer.admin_addr);
    println!(
        "{n} spans in {batches} OTLP/HTTP protobuf requests of {BATCH} ({bytes_per_span} B/span encoded, GenAI attributes), {concurrency} requests in flight; a receiver-only collector replica and one writer (concurrency {writer_concurrency}) on PostgreSQL, each on its own runtime; {cores} CPU cores shared by everything"
    );

    let post = |body: Vec<u8>| {
        let http = http.clone();
        let url = export_url.clone();
        async move {
            let started = Instant::now();
            let response = http
                .post(url)
                .header("content-type", "application/x-protobuf")
                .header("agentmesh-tenant", "bench")
                .header(
                    "agentmesh-service-token",
                    mesh_integration::mesh::service_token(),
                )
                .body(body)
                .send()
                .await?;
            if !response.status().is_success() {
                bail!("export answered {}", response.status());
            }
            let answer = trace_collector::opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse::decode(response.bytes().await?)?;
            if let Some(partial) = answer.partial_success.filter(|p| p.rejected_spans > 0) {
                bail!(
                    "{} spans rejected: {}",
                    partial.rejected_spans,
                    partial.error_message
                );
            }
            anyhow::Ok(started.elapsed())
        }
    };
    // Warm-up: a few requests, stored before the measured run.
    // Fresh bodies: the receiver dedupes identical requests on TRACES.
    let warm = 10;
    let warm_bodies: Vec<Vec<u8>> = (0..warm)
        .map(|_| bench_batch(BATCH).encode_to_vec())
        .collect();
    closed_loop(warm, concurrency, |i| post(warm_bodies[i].clone())).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&http, &metrics_url, "traces_spans_stored").await? < (warm * BATCH) as f64 {
        if Instant::now() > deadline {
            bail!("the warm-up spans were never stored");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stored_before = metric(&http, &metrics_url, "traces_spans_stored").await?;

    let cpu_before = cpu::snapshot();
    let receiver_cpu_before = cpu::threads(RECEIVER_THREADS);
    let writer_cpu_before = cpu::threads(WRITER_THREADS);
    let started = Instant::now();
    let (samples, accepted_in) =
        closed_loop(batches, concurrency, |i| post(bodies[i].clone())).await?;
    let receiver_cpu = cpu::threads_since(RECEIVER_THREADS, &receiver_cpu_before);
    let cpu_receiving = cpu::since(&cpu_before);
    eprintln!(
        "  receiver: {n} spans answered in {}",
        fmt_duration(accepted_in)
    );
    let target = stored_before + n as f64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut report = Instant::now();
    loop {
        let stored = metric(&http, &metrics_url, "traces_spans_stored").await?;
        if stored >= target {
            break;
        }
        if report.elapsed() > Duration::from_secs(5) {
            report = Instant::now();
            eprintln!("  writer: {} of {n} spans stored", stored - stored_before);
        }
        if Instant::now() > deadline {
            bail!(
                "the writer stored {} of {n} spans in 600 s",
                stored - stored_before
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stored_in = started.elapsed();
    let writer_cpu = cpu::threads_since(WRITER_THREADS, &writer_cpu_before);
    stop.cancel();
    receiver.stopped.wait().await?;
    writer.stopped.wait().await?;
    receiver_runtime.shutdown_background();
    writer_runtime.shutdown_background();

    // Baseline 1: the same bytes published straight to JetStream, from a
    // runtime of its own (its CPU is the bare client's cost per span).
    let client = async_nats::connect(&nats.url).await?;
    let js = jetstream::new(client);
    js.get_or_create_stream(jetstream::stream::Config {
        name: "BENCH_TRACES".to_owned(),
        subjects: vec!["benchtraces.>".to_owned()],
        retention: jetstream::stream::RetentionPolicy::WorkQueue,
        storage: jetstream::stream::StorageType::File,
        max_message_size: 1024 * 1024,
        ..Default::default()
    })
    .await?;
    let raw_runtime = named_runtime(RAW_PUBLISH_THREADS, cores)?;
    let raw_bodies = Arc::new((warm_bodies.clone(), bodies.clone()));
    let nats_url = nats.url.clone();
    let (raw_samples, raw_in, raw_cpu) = raw_runtime
        .spawn(async move {
            // Connected on this runtime, so the connection's own task
            // runs (and is counted) here too.
            let js = jetstream::new(async_nats::connect(&nats_url).await?);
            let publish = |body: Vec<u8>| {
                let js = js.clone();
                async move {
                    let started = Instant::now();
                    let mut headers = async_nats::HeaderMap::new();
                    headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
                    js.publish_with_headers("benchtraces.bench", headers, body.into())
                        .await?
                        .await?;
                    anyhow::Ok(started.elapsed())
                }
            };
            let (warm_bodies, bodies) = &*raw_bodies;
            closed_loop(warm_bodies.len(), concurrency, |i| {
                publish(warm_bodies[i].clone())
            })
            .await?;
            let before = cpu::threads(RAW_PUBLISH_THREADS);
            let (samples, took) =
                closed_loop(bodies.len(), concurrency, |i| publish(bodies[i].clone())).await?;
            anyhow::Ok((
                samples,
                took,
                cpu::threads_since(RAW_PUBLISH_THREADS, &before),
            ))
        })
        .await??;
    raw_runtime.shutdown_background();

    // Baseline 2: the same rows, 100 per INSERT, into a plain table.
    let rows: Vec<_> = bodies
        .iter()
        .map(|b| -> anyhow::Result<_> {
            let request = ExportTraceServiceRequest::decode(b.as_slice())?;
            Ok(trace_collector::writer::rows_of(&request))
        })
        .collect::<anyhow::Result<_>>()?;
    let raw_insert_in = raw_batched_insert(&database_url, rows, writer_concurrency).await?;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    let per_cpu_second = |d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
    println!(
        "  {:<38} {:>12} {:>12} {:>10}",
        "", "spans/s", "baseline/s", "ratio"
    );
    let (receiver_rate, raw_rate) = (rate(accepted_in), rate(raw_in));
    println!(
        "  {:<38} {:>12.0} {:>12.0} {:>9.2}x",
        "receiver (to durable enqueue)",
        receiver_rate,
        raw_rate,
        receiver_rate / raw_rate
    );
    let (writer_rate, insert_rate) = (rate(stored_in), rate(raw_insert_in));
    println!(
        "  {:<38} {:>12.0} {:>12.0} {:>9.2}x",
        "writer (stored in PostgreSQL)",
        writer_rate,
        insert_rate,
        writer_rate / insert_rate
    );
    print_table(&[
        Row {
            label: "export request (100 spans)".to_owned(),
            stats: Stats::of(samples),
            rate: Some((receiver_rate, "spans/s")),
        },
        Row {
            label: "raw JetStream publish (same bytes)".to_owned(),
            stats: Stats::of(raw_samples),
            rate: Some((raw_rate, "spans/s")),
        },
    ]);
    if let Some(used) = &cpu_receiving {
        cpu::print(used, accepted_in);
    }
    // Per core: spans per CPU-second of the receiver replica's own
    // threads: its HTTP server, validation and NATS client. Not counted:
    // nats-server (storing the stream), the bench's HTTP client, the writer.
    // The baseline is the bare JetStream client publishing the same bytes.
    let per_core = (!receiver_cpu.is_zero()).then(|| per_cpu_second(receiver_cpu));
    match per_core {
        Some(per_core) => {
            println!(
                "  receiver CPU: {:.2} s for {n} spans = {per_core:.0} spans per CPU-second; raw JetStream publish of the same bytes: {:.2} s = {:.0} spans per CPU-second ({:.2}x)",
                receiver_cpu.as_secs_f64(),
                raw_cpu.as_secs_f64(),
                per_cpu_second(raw_cpu),
                per_core / per_cpu_second(raw_cpu),
            );
            println!(
                "  target receiver >= 50000 spans/s per core: {per_core:.0} spans per CPU-second of the receiver's threads (nats-server, client and writer not counted) -> {}",
                verdict(per_core >= 50_000.0)
            );
        }
        None => println!(
            "  target receiver >= 50000 spans/s per core: {receiver_rate:.0} spans/s over {cores} cores (no per-thread CPU in /proc) -> {}",
            verdict(receiver_rate / cores as f64 >= 50_000.0)
        ),
    }
    if !writer_cpu.is_zero() {
        println!(
            "  writer CPU (its threads, not PostgreSQL's): {:.2} s = {:.0} spans per CPU-second",
            writer_cpu.as_secs_f64(),
            per_cpu_second(writer_cpu)
        );
    }
    println!(
        "  target writer >= 10000 spans/s into PostgreSQL: {writer_rate:.0} spans/s -> {}",
        verdict(writer_rate >= 10_000.0)
    );
    traces_big::many_observations(2_000, 20).await?;
    traces_big::langfuse_ingest(2_000, concurrency).await?;
    drop(nats);
    Ok(())
}

/// The rows the writer would store, as plain 100-row INSERTs with
/// `concurrency` statements in flight, and the wall time.
async fn raw_batched_insert(
    url: &str,
    batches: Vec<Vec<trace_collector::mapping::ObservationRow>>,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    use sea_orm::{ConnectionTrait as _, Statement, Value as SqlValue};
    let mut options = sea_orm::ConnectOptions::new(url.to_owned());
    options.max_connections(u32::try_from(concurrency).unwrap_or(16));
    let db = sea_orm::Database::connect(options).await?;
    db.execute_unprepared(
        "CREATE TABLE bench_spans (id BIGSERIAL PRIMARY KEY, tenant TEXT NOT NULL, trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_span_id TEXT NOT NULL, name TEXT NOT NULL, kind TEXT NOT NULL, start_ms BIGINT NOT NULL, end_ms BIGINT NOT NULL, status_code TEXT NOT NULL, level TEXT NOT NULL, model TEXT, input_tokens BIGINT NOT NULL, output_tokens BIGINT NOT NULL, agent TEXT, session_id TEXT, user_id TEXT, attributes JSONB NOT NULL)",
    )
    .await?;
    const COLUMNS: usize = 17;
    let statements: Vec<Statement> = batches
        .into_iter()
        .map(|rows| {
            let mut sql = String::from(
                "INSERT INTO bench_spans (tenant, trace_id, span_id, parent_span_id, name, kind, start_ms, end_ms, status_code, level, model, input_tokens, output_tokens, agent, session_id, user_id, attributes) VALUES ",
            );
            let mut values: Vec<SqlValue> = Vec::with_capacity(rows.len() * COLUMNS);
            for (r, row) in rows.into_iter().enumerate() {
                if r > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..COLUMNS {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", r * COLUMNS + c + 1));
                }
                sql.push(')');
                values.extend([
                    "bench".into(),
                    row.trace_id.into(),
                    row.span_id.into(),
                    row.parent_span_id.into(),
                    row.name.into(),
                    row.kind.into(),
                    row.start_ms.into(),
                    row.end_ms.into(),
                    row.status_code.into(),
                    row.level.into(),
                    row.model.into(),
                    row.input_tokens.into(),
                    row.output_tokens.into(),
                    row.agent.into(),
                    row.session_id.into(),
                    row.user_id.into(),
                    row.attributes.into(),
                ]);
            }
            Statement::from_sql_and_values(sea_orm::DatabaseBackend::Postgres, sql, values)
        })
        .collect();
    let started = Instant::now();
    futures::stream::iter(statements)
        .map(|statement| {
            let db = db.clone();
            async move { db.execute_raw(statement).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let elapsed = started.elapsed();
    db.close().await?;
    Ok(elapsed)
}
