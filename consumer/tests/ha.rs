//! High availability with several consumer processes (the real binary) on one broker and the
//! real Redis: every failed reload is alerted while one consumer lives — including when one is
//! SIGKILLed for good mid-burst, and when the store restarts mid-burst — and two consumers
//! racing on the same events alert each once. Also `/metrics` and `/healthz`.
//!
//! Needs Redis on 127.0.0.1:6379 (CI starts it) and `redis-server` for the restart test; skipped
//! with a message when absent. Run with `--nocapture` to see the figures.

mod support;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use support::*;

const REDIS: &str = "redis://127.0.0.1:6379/0";
const LEASE_SECS: u64 = 2;

/// A consumer configured for the group: its own client id, the shared topic root and store.
fn member(
    broker: &testkit::TestBroker,
    root: &str,
    webhook: &str,
    store: &str,
    metrics: Option<u16>,
) -> Setup {
    let mut setup = write_config(
        broker,
        &Destinations {
            webhook: Some(webhook.to_owned()),
            max_attempts: 3,
            topic_root: Some(root.to_owned()),
            ..Default::default()
        },
    );
    setup.edit(|config| {
        config
            .consumer("stateStore", store)
            .consumer("claimLeaseSeconds", LEASE_SECS);
        if let Some(port) = metrics {
            config.consumer("metrics.listen", format!("127.0.0.1:{port}"));
        }
    });
    setup
}

/// Publishes every payload on one connection, 20 in flight, and returns once all are
/// acknowledged.
async fn burst(broker: testkit::TestBroker, topic: String, payloads: Vec<Vec<u8>>) {
    burst_with(&broker, &topic, payloads, 20, Duration::from_secs(60)).await;
}

fn events(n: usize) -> (Vec<String>, Vec<Vec<u8>>) {
    let ids: Vec<String> = (0..n).map(|i| testkit::unique(&format!("ha{i}"))).collect();
    let payloads = ids
        .iter()
        .map(|id| {
            event(
                Sample::CloudEventsAppReload,
                id,
                TENANT,
                &format!("app-{id}"),
            )
        })
        .collect();
    (ids, payloads)
}

/// The consumers' shared webhook and the alerts it received, counted by event id.
struct Tally {
    webhook: Receiver,
    counts: BTreeMap<String, usize>,
}

impl Tally {
    fn new(webhook: Receiver) -> Self {
        Self {
            webhook,
            counts: BTreeMap::new(),
        }
    }
    fn add(&mut self, r: &Request) {
        let id = r.body["eventId"].as_str().unwrap_or("?").to_owned();
        *self.counts.entry(id).or_default() += 1;
    }
    fn alerts(&self) -> usize {
        self.counts.values().sum()
    }
    fn lost(&self, ids: &[String]) -> usize {
        ids.iter()
            .filter(|id| !self.counts.contains_key(*id))
            .count()
    }
    fn duplicates(&self) -> usize {
        self.counts.values().map(|n| n.saturating_sub(1)).sum()
    }
}

/// Receives until every id arrived (or the deadline), calling `at(count)` after each.
async fn collect(tally: &mut Tally, ids: &[String], mut at: impl AsyncFnMut(usize)) {
    let wanted: HashSet<&String> = ids.iter().collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    while wanted.iter().any(|id| !tally.counts.contains_key(*id)) && Instant::now() < deadline {
        let request = tally.webhook.delivered().await;
        tally.add(&request);
        at(tally.alerts()).await;
    }
}

/// A last event, seen by every survivor: everything before it has been decided.
async fn settle(
    broker: &testkit::TestBroker,
    setup: &Setup,
    ids: &[String],
    survivors: &mut [&mut Binary],
    tally: &mut Tally,
) {
    let marker = testkit::unique("marker");
    publish(
        broker,
        &setup.topic,
        event(Sample::Legacy, &marker, TENANT, "app-marker"),
    )
    .await;
    // Events are handled concurrently: the marker may be done before events that wait for
    // another consumer's claim. Wait until each survivor decided every event.
    let mut all: Vec<String> = ids.to_vec();
    all.push(marker.clone());
    for s in survivors.iter_mut() {
        for id in &all {
            wait_for_decision(s, id).await;
        }
    }
    for r in tally.webhook.drain_delivered() {
        if r.body["eventId"] != marker.as_str() {
            tally.add(&r);
        }
    }
}

#[tokio::test]
async fn a_consumer_killed_for_good_mid_burst_loses_nothing() {
    if skip_without_redis() {
        return;
    }
    for broker in testkit::brokers() {
        let webhook = Receiver::start().await;
        let root = testkit::unique("qscloud-ha");
        let setups: Vec<Setup> = (0..3)
            .map(|_| member(&broker, &root, &webhook.url("hook"), REDIS, None))
            .collect();
        let mut consumers = Vec::new();
        for s in &setups {
            consumers.push(spawn_binary(s).await);
        }
        let n = 60;
        let (ids, payloads) = events(n);
        let publisher = tokio::spawn(burst(broker.clone(), setups[0].topic.clone(), payloads));
        let mut victim = Some(consumers.remove(0));
        let mut tally = Tally::new(webhook);
        collect(&mut tally, &ids, async |count| {
            if count >= n / 4
                && let Some(v) = victim.take()
            {
                let log = v.kill().await;
                assert!(log.contains("subscribed"), "{log}");
            }
        })
        .await;
        publisher.await.expect("publisher");
        let (mut b, mut c) = (consumers.remove(0), consumers.remove(0));
        settle(&broker, &setups[0], &ids, &mut [&mut b, &mut c], &mut tally).await;
        println!(
            "HA kill ({}): events {n}, alerts {}, lost {}, duplicates {}",
            broker.name,
            tally.alerts(),
            tally.lost(&ids),
            tally.duplicates()
        );
        assert_eq!(tally.lost(&ids), 0, "{} lost an event", broker.name);
        // Only the events in the killed consumer's hands (at most `concurrency`, default 32)
        // can go out twice: delivered in the instant before the kill, not yet marked done.
        assert!(
            tally.duplicates() <= consumer::config::DEFAULT_CONCURRENCY as usize,
            "{} duplicates {:?}",
            broker.name,
            tally.counts
        );
        let _ = (b.kill().await, c.kill().await);
    }
}

#[tokio::test]
async fn two_consumers_racing_on_the_same_events_alert_each_once() {
    if skip_without_redis() {
        return;
    }
    let broker = testkit::embedded();
    let webhook = Receiver::start().await;
    let root = testkit::unique("qscloud-race");
    let a_setup = member(&broker, &root, &webhook.url("hook"), REDIS, None);
    let b_setup = member(&broker, &root, &webhook.url("hook"), REDIS, None);
    let mut a = spawn_binary(&a_setup).await;
    let mut b = spawn_binary(&b_setup).await;
    let (ids, payloads) = events(30);
    burst(broker.clone(), a_setup.topic.clone(), payloads).await;
    let mut tally = Tally::new(webhook);
    collect(&mut tally, &ids, async |_| {}).await;
    settle(&broker, &a_setup, &ids, &mut [&mut a, &mut b], &mut tally).await;
    assert_eq!(tally.lost(&ids), 0);
    assert_eq!(tally.duplicates(), 0, "{:?}", tally.counts);
    let (log_a, log_b) = (a.kill().await, b.kill().await);
    // Both did part of the work: they really raced.
    // Every event (and the marker) had one owner and was dropped once by the other.
    let dropped = format!("{log_a}{log_b}")
        .matches("already alerted on")
        .count();
    assert_eq!(dropped, ids.len() + 1, "A:\n{log_a}\nB:\n{log_b}");
}

/// A Redis of our own, so it can be restarted without disturbing others.
struct OwnRedis {
    port: u16,
    /// `Some(dir)`: append-only file, fsync on every write.
    dir: Option<std::path::PathBuf>,
    child: Option<tokio::process::Child>,
}

impl OwnRedis {
    async fn start(port: u16, dir: Option<std::path::PathBuf>) -> Option<OwnRedis> {
        let mut args: Vec<String> = [
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match &dir {
            Some(dir) => args.extend(
                ["--appendonly", "yes", "--appendfsync", "always", "--dir"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([dir.display().to_string()]),
            ),
            None => args.extend(["--appendonly".to_owned(), "no".to_owned()]),
        }
        let child = tokio::process::Command::new("redis-server")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .ok()?;
        let started = Instant::now();
        while !redis_answers(port) {
            if started.elapsed() > Duration::from_secs(10) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Some(OwnRedis {
            port,
            dir,
            child: Some(child),
        })
    }

    async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
            let _ = child.wait().await;
        }
    }
}

/// Two consumers, a burst, the store SIGKILLed and restarted after a third of the alerts.
/// Returns the tally and both logs; `None` when redis-server cannot be started.
async fn restart_run(persistent: bool) -> Option<(Vec<String>, Tally, String)> {
    let port = free_port();
    let data = tempfile::tempdir().expect("redis dir");
    let dir = persistent.then(|| data.path().to_owned());
    let Some(mut redis) = OwnRedis::start(port, dir).await else {
        eprintln!("SKIPPED: cannot start redis-server (install it: apt-get install redis-server)");
        return None;
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let broker = testkit::embedded();
    let webhook = Receiver::start().await;
    let root = testkit::unique("qscloud-restart");
    let a_setup = member(&broker, &root, &webhook.url("hook"), &url, None);
    let b_setup = member(&broker, &root, &webhook.url("hook"), &url, None);
    let mut a = spawn_binary(&a_setup).await;
    let mut b = spawn_binary(&b_setup).await;
    let n = 60;
    let (ids, payloads) = events(n);
    let publisher = tokio::spawn(burst(broker.clone(), a_setup.topic.clone(), payloads));
    let mut tally = Tally::new(webhook);
    let mut restarted = false;
    collect(&mut tally, &ids, async |count| {
        if count >= n / 3 && !restarted {
            restarted = true;
            redis.kill().await;
            // Down long enough for both consumers to notice and hold their messages.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            redis = OwnRedis::start(redis.port, redis.dir.clone())
                .await
                .expect("redis restarts");
        }
    })
    .await;
    publisher.await.expect("publisher");
    settle(&broker, &a_setup, &ids, &mut [&mut a, &mut b], &mut tally).await;
    assert!(restarted);
    let logs = format!("{}{}", a.kill().await, b.kill().await);
    assert!(
        logs.contains("state store unreachable"),
        "the outage was seen and logged"
    );
    redis.kill().await;
    Some((ids, tally, logs))
}

#[tokio::test]
async fn the_store_restarted_mid_burst_loses_nothing() {
    for persistent in [true, false] {
        let Some((ids, tally, logs)) = restart_run(persistent).await else {
            return;
        };
        let resets = logs.matches("state store lost its memory").count();
        let warned = logs
            .matches("claim lost before the event was marked done")
            .count()
            + logs.matches("taking it over").count();
        println!(
            "HA store restart ({}): events {}, alerts {}, lost {}, duplicates {} (store resets seen {resets}, lost-claim warnings {warned})",
            if persistent {
                "appendonly, fsync always"
            } else {
                "no persistence"
            },
            ids.len(),
            tally.alerts(),
            tally.lost(&ids),
            tally.duplicates()
        );
        assert_eq!(tally.lost(&ids), 0, "{:?}", tally.counts);
        if persistent {
            // The store kept its memory: a duplicate only where a lease ran out meanwhile, and
            // each of those is announced.
            assert_eq!(resets, 0, "{logs}");
            assert!(
                tally.duplicates() <= warned,
                "duplicates {} > warnings {warned}",
                tally.duplicates()
            );
        } else if tally.duplicates() > 0 {
            // Forgotten decisions are announced, never silent.
            assert!(
                resets > 0,
                "duplicates without a store-reset error:\n{logs}"
            );
        }
    }
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .expect("metrics server answers");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test]
async fn metrics_and_healthz() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    let root = testkit::unique("qscloud-metrics");
    // File store: healthy once connected to the broker.
    let port = free_port();
    let setup = member(&broker, &root, &webhook.url("hook"), "file", Some(port));
    let consumer = spawn_binary(&setup).await;
    let (status, body) = get(port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["store"], "file");
    let id = testkit::unique("metrics");
    publish(
        &broker,
        &setup.topic,
        event(Sample::CloudEventsAppReload, &id, TENANT, "app-m"),
    )
    .await;
    publish(&broker, &setup.topic, b"not json".to_vec()).await;
    webhook.delivered().await;
    let mut text = String::new();
    for _ in 0..100 {
        (_, text) = get(port, "/metrics").await;
        if text.contains("outcome=\"invalid\"") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for line in [
        format!("qscloud_consumer_events_total{{tenant=\"{TENANT}\",outcome=\"alerted\"}} 1"),
        "qscloud_consumer_events_total{tenant=\"unknown\",outcome=\"invalid\"} 1".to_owned(),
        "qscloud_consumer_alerts_total{sink=\"webhook:ops\",outcome=\"delivered\"} 1".to_owned(),
        "qscloud_consumer_broker_connected 1".to_owned(),
        "qscloud_consumer_parked_alerts 0".to_owned(),
        // One per delivery: the log sink and the webhook.
        "qscloud_consumer_alert_latency_seconds_count 2".to_owned(),
    ] {
        assert!(text.contains(&line), "missing `{line}` in\n{text}");
    }
    // The file store has no connection to lose: no store series (a rule on them stays quiet).
    assert!(!text.contains("qscloud_consumer_store_"), "{text}");
    consumer.kill().await;

    // Redis configured but unreachable: 503 with the reason, and nothing secret in it.
    let port = free_port();
    let dead = free_port();
    let setup = member(
        &broker,
        &root,
        &webhook.url("hook"),
        &format!("redis://:store-pw-123@127.0.0.1:{dead}/0"),
        Some(port),
    );
    let consumer = spawn_binary(&setup).await;
    let (status, body) = get(port, "/healthz").await;
    assert_eq!(status, 503, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(health["store"], "unreachable");
    assert!(
        health["reason"]
            .as_str()
            .unwrap_or("")
            .contains("state store")
    );
    let (_, text) = get(port, "/metrics").await;
    assert!(
        text.contains("qscloud_consumer_store_connected 0"),
        "{text}"
    );
    let log = consumer.kill().await;
    assert!(
        !log.contains("store-pw-123") && !body.contains("store-pw-123"),
        "{log}"
    );

    if skip_without_redis() {
        return;
    }
    let port = free_port();
    let setup = member(&broker, &root, &webhook.url("hook"), REDIS, Some(port));
    let consumer = spawn_binary(&setup).await;
    let (status, body) = get(port, "/healthz").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"store\":\"connected\""), "{body}");
    consumer.kill().await;
}
