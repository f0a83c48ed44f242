//! A broker that is not there yet: the consumer retries with capped exponential backoff (no
//! tight loop), then connects, subscribes and alerts once the broker comes up.

mod support;

use std::time::{Duration, Instant};

use consumer::pipeline::{RunEvent, RunOptions};
use consumer::source::{Backoff, SourceConfig};
use support::*;

#[tokio::test]
async fn waits_for_a_late_broker_with_backoff_then_subscribes_and_alerts() {
    // A port that refuses MQTT: it accepts TCP and closes at once, and counts the attempts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let (attempt_tx, mut attempts) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let (stop_refusing, refusing_stopped) = std::sync::mpsc::channel::<()>();
    listener.set_nonblocking(true).expect("nonblocking");
    let refuser = std::thread::spawn(move || {
        // Polling accept with a short sleep: std offers no accept-with-timeout, and the thread
        // must notice when the test wants the port back.
        while refusing_stopped.try_recv().is_err() {
            if let Ok((stream, _)) = listener.accept() {
                let _ = attempt_tx.send(Instant::now());
                drop(stream);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    });

    let broker = testkit::TestBroker {
        name: "late",
        host: "127.0.0.1".into(),
        port: addr.port(),
        v5_port: addr.port(),
        persistent_sessions: true,
    };
    let mut webhook = Receiver::start().await;
    let setup = webhook_only(&broker, &webhook.url("hook"));
    let config = setup.config();
    let mut source = SourceConfig::from_config(&config);
    source.backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(400));
    let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(consumer::pipeline::run(
        config,
        async move {
            let _ = stopped.await;
        },
        RunOptions {
            observer: Some(tx),
            source: Some(source),
        },
    ));

    // Four refused connections: the pauses between them grow (50, 100, 200 ms nominal); a
    // tight loop would retry at once.
    let mut times = Vec::new();
    for _ in 0..4 {
        let at = tokio::time::timeout(WAIT, attempts.recv())
            .await
            .ok()
            .flatten()
            .expect("a connection attempt");
        times.push(at);
    }
    let _ = stop_refusing.send(());
    refuser.join().expect("refuser thread");
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, nominal) in gaps.iter().zip([50u64, 100, 200]) {
        assert!(
            *gap >= Duration::from_millis(nominal * 8 / 10),
            "pauses between attempts {gaps:?}"
        );
    }

    // The broker comes up on that port; the consumer connects and subscribes on its own.
    embedded_broker::start(Some(addr)).expect("broker starts on the freed port");
    let subscribed = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Some(RunEvent::Subscribed) => return true,
                Some(_) => {}
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(subscribed, Ok(true), "subscribed after the broker came up");
    let id = testkit::unique("late");
    publish(
        &broker,
        &setup.topic,
        event(Sample::Legacy, &id, TENANT, &testkit::unique("app")),
    )
    .await;
    assert_eq!(webhook.delivered().await.body["eventId"], id.as_str());
    let _ = stop.send(());
    let _ = tokio::time::timeout(WAIT, task).await;
}
