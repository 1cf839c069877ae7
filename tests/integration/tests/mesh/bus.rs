//! The bus primitives against a real JetStream server: stream topology,
//! the agent consumer contract, consumer lag as KEDA reads it, and what
//! each acknowledgement does to redelivery.

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use mesh_bus::{Bus, BusConfig, Delivery, StreamKind};
use mesh_integration::Nats;
use mesh_proto::TaskEnvelope;

async fn bus(ack_wait: Duration) -> (Nats, Bus) {
    let nats = Nats::start().expect("nats-server");
    let config = BusConfig {
        task_ack_wait: ack_wait,
        ..BusConfig::default()
    };
    let bus = Bus::connect(&nats.url, "bus-test", config)
        .await
        .expect("connect");
    bus.ensure_streams(&StreamKind::ALL).await.expect("streams");
    (nats, bus)
}

fn envelope(id: &str) -> TaskEnvelope {
    TaskEnvelope {
        task_id: id.to_owned(),
        tenant: "acme".to_owned(),
        agent: "support".to_owned(),
        input: "hi".to_owned(),
        ..Default::default()
    }
}

async fn next(
    messages: &mut (
             impl futures::Stream<Item = Result<async_nats::jetstream::Message, impl std::fmt::Debug>>
             + Unpin
         ),
    within: Duration,
) -> Option<Delivery<TaskEnvelope>> {
    let message = tokio::time::timeout(within, messages.next())
        .await
        .ok()??
        .ok()?;
    Some(Delivery::decode(message).expect("decodable"))
}

#[tokio::test]
async fn streams_are_declared_once_with_the_contract_names() {
    let (_nats, bus) = bus(Duration::from_secs(30)).await;
    // A second declaration (another replica starting) is a no-op.
    bus.ensure_streams(&StreamKind::ALL).await.unwrap();
    for kind in StreamKind::ALL {
        let mut stream = bus.jetstream().get_stream(kind.name()).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.subjects, vec![kind.subjects().to_owned()]);
    }
    let tasks = bus
        .jetstream()
        .get_stream("TASKS")
        .await
        .unwrap()
        .cached_info()
        .config
        .retention;
    assert_eq!(
        tasks,
        async_nats::jetstream::stream::RetentionPolicy::WorkQueue
    );
    bus.ensure_agent_consumer("support").await.unwrap();
    assert_eq!(
        bus.agent_consumer_names().await.unwrap(),
        vec!["agent-support".to_owned()]
    );
}

#[tokio::test]
async fn lag_counts_pending_and_unacked_and_headers_carry_the_tenant() {
    let (_nats, bus) = bus(Duration::from_secs(30)).await;
    let consumer = bus.ensure_agent_consumer("support").await.unwrap();
    for i in 0..5 {
        bus.publish_acked(
            "tasks.acme.support".into(),
            "acme",
            &format!("t{i}"),
            &envelope(&format!("t{i}")),
        )
        .await
        .unwrap();
    }
    // The same Nats-Msg-Id again is dropped by the stream.
    let dup = bus
        .publish_acked("tasks.acme.support".into(), "acme", "t0", &envelope("t0"))
        .await
        .unwrap();
    assert!(dup.duplicate);
    let lag = bus
        .consumer_lag(StreamKind::Tasks, "agent-support")
        .await
        .unwrap();
    assert_eq!((lag.pending, lag.ack_pending, lag.total()), (5, 0, 5));

    let mut messages = consumer.messages().await.unwrap();
    let first = next(&mut messages, Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.tenant, "acme");
    assert_eq!(first.delivered, 1);
    assert_eq!(first.payload.task_id, "t0");
    // Delivered but not acked: still lag (KEDA must not scale it away).
    let lag = bus
        .consumer_lag(StreamKind::Tasks, "agent-support")
        .await
        .unwrap();
    assert!(lag.ack_pending >= 1 && lag.total() == 5, "{lag:?}");
    first.ack().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let lag = bus
        .consumer_lag(StreamKind::Tasks, "agent-support")
        .await
        .unwrap();
    assert_eq!(lag.total(), 4, "{lag:?}");
}

#[tokio::test]
async fn nak_delays_redelivery_in_progress_extends_it_and_term_ends_it() {
    let ack_wait = Duration::from_millis(800);
    let (_nats, bus) = bus(ack_wait).await;
    let consumer = bus.ensure_agent_consumer("support").await.unwrap();
    let mut messages = consumer.messages().await.unwrap();

    // Nak with a delay: redelivered (delivered = 2) no sooner than the delay.
    bus.publish_acked("tasks.acme.support".into(), "acme", "nak", &envelope("nak"))
        .await
        .unwrap();
    let d = next(&mut messages, Duration::from_secs(5)).await.unwrap();
    let nak_at = Instant::now();
    d.nak_after(Duration::from_millis(300)).await.unwrap();
    let again = next(&mut messages, Duration::from_secs(5)).await.unwrap();
    assert!(
        nak_at.elapsed() >= Duration::from_millis(280),
        "{:?}",
        nak_at.elapsed()
    );
    assert_eq!(
        (again.payload.task_id.as_str(), again.delivered),
        ("nak", 2)
    );
    again.ack().await.unwrap();

    // In progress: held past ack-wait without a redelivery.
    bus.publish_acked(
        "tasks.acme.support".into(),
        "acme",
        "long",
        &envelope("long"),
    )
    .await
    .unwrap();
    let d = next(&mut messages, Duration::from_secs(5)).await.unwrap();
    for _ in 0..4 {
        tokio::time::sleep(ack_wait / 3).await;
        d.in_progress().await.unwrap();
    }
    assert!(
        next(&mut messages, Duration::from_millis(200))
            .await
            .is_none(),
        "no redelivery while in progress"
    );
    d.ack().await.unwrap();

    // Term: never delivered again, even after ack-wait.
    bus.publish_acked(
        "tasks.acme.support".into(),
        "acme",
        "poison",
        &envelope("poison"),
    )
    .await
    .unwrap();
    let d = next(&mut messages, Duration::from_secs(5)).await.unwrap();
    d.term().await.unwrap();
    assert!(
        next(&mut messages, ack_wait * 2).await.is_none(),
        "term stops redelivery"
    );
}

#[tokio::test]
async fn dead_lettering_copies_the_message_with_the_reason_and_removes_it() {
    let (_nats, bus) = bus(Duration::from_secs(30)).await;
    let consumer = bus.ensure_agent_consumer("support").await.unwrap();
    let dlq = bus
        .client()
        .subscribe("dlq.tasks.acme.support")
        .await
        .unwrap();
    bus.publish_acked("tasks.acme.support".into(), "acme", "x", &envelope("x"))
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let d = next(&mut messages, Duration::from_secs(5)).await.unwrap();
    d.dead_letter(&bus, "testing").await.unwrap();
    let dead: Vec<_> = tokio::time::timeout(Duration::from_secs(5), dlq.take(1).collect())
        .await
        .unwrap();
    let headers = dead[0].headers.clone().unwrap();
    assert_eq!(
        headers.get("agentmesh-dlq-reason").unwrap().as_str(),
        "testing"
    );
    assert_eq!(
        headers.get("agentmesh-dlq-subject").unwrap().as_str(),
        "tasks.acme.support"
    );
    assert_eq!(headers.get("agentmesh-tenant").unwrap().as_str(), "acme");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tasks = bus.jetstream().get_stream("TASKS").await.unwrap();
    assert_eq!(tasks.info().await.unwrap().state.messages, 0);
    let mut dlq_stream = bus.jetstream().get_stream("DLQ").await.unwrap();
    assert_eq!(dlq_stream.info().await.unwrap().state.messages, 1);
}
