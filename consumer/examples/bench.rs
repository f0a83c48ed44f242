//! Consumer benchmark: drives a consumer *binary* from outside, so today's and an older build
//! can be measured the same way.
//!
//! ```text
//! cargo build --release -p consumer
//! CONSUMER_BIN=target/release/consumer cargo run --release -p consumer --example bench
//! ```
//!
//! Stand-ins: Mosquitto on 127.0.0.1:1883 when it answers (else the embedded rumqttd), the
//! tests' fake tenant (`consumer/tests/support/fake_tenant.rs`) for enrichment, and a webhook
//! receiver that counts alerts by event id. Their own capacity is measured first, so they are
//! not what is measured afterwards.
//!
//! 1. Burst: 1,000 failed-reload events published at once; time from the first publish to the
//!    last distinct alert, alerts/s, and the consumer's peak RSS (`VmHWM`).
//! 2. Kill/restart: the same burst, the consumer SIGKILLed three times mid-burst and restarted;
//!    events, alerts, lost (never alerted) and duplicates (alerted more than once).
//!
//! `BENCH_EVENTS` changes the burst size (default 1000).

#[path = "../tests/support/fake_tenant.rs"]
#[allow(dead_code)]
mod fake_tenant;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use fake_tenant::{FakeTenant, TenantData};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

type Counts = Arc<(Mutex<HashMap<String, u32>>, Notify)>;

/// The webhook destination: counts deliveries per event id.
async fn start_receiver() -> (String, Counts) {
    let counts: Counts = Arc::new((Mutex::new(HashMap::new()), Notify::new()));
    let app = axum::Router::new()
        .fallback(|State(counts): State<Counts>, body: Bytes| async move {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["eventId"].as_str().map(str::to_owned))
                .unwrap_or_default();
            if let Ok(mut map) = counts.0.lock() {
                *map.entry(id).or_default() += 1;
            }
            counts.1.notify_waiters();
            "ok"
        })
        .with_state(Arc::clone(&counts));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, counts)
}

fn distinct_and_total(counts: &Counts) -> (usize, u64) {
    let map = counts.0.lock().map(|m| m.clone()).unwrap_or_default();
    (map.len(), map.values().map(|n| u64::from(*n)).sum())
}

fn write_config(
    dir: &Path,
    broker: &testkit::TestBroker,
    tenant: &FakeTenant,
    hook: &str,
) -> (PathBuf, PathBuf, String) {
    let root = testkit::unique("bench");
    let butler = format!(
        "Butler:
    mqttConfig:
        qlikSenseCloud:
            event:
                mqttForward:
                    enable: true
                    broker:
                        host: {}
                        port: {}
                    topic:
                        subscriptionRoot: {root}/#
                        appReload: {root}/app/reload
    qlikSenseCloud:
        enable: true
        event:
            mqtt:
                tenant:
                    id: {}
                    tenantUrl: {}
                    authType: jwt
                    auth:
                        jwt:
                            token: {}
",
        broker.host,
        broker.port,
        fake_tenant::TENANT_ID,
        tenant.url(),
        tenant.jwt()
    );
    let extensions = format!(
        "Butler:
    mqttConfig:
        qlikSenseCloud:
            event:
                mqttForward:
                    broker:
                        tls: false
                        clientId: {}
                        cleanSession: false
    qlikSenseCloud:
        consumer:
            stateDirectory: {}
            deadLetterDirectory: {}
            destinations:
                log:
                    enable: false
                webhook:
                    - name: bench
                      url: {hook}
",
        testkit::unique("bench-consumer"),
        dir.join("state").display(),
        dir.join("dead-letter").display(),
    );
    let (b, e) = (dir.join("butler.yaml"), dir.join("consumer.yaml"));
    std::fs::write(&b, butler).expect("write config");
    std::fs::write(&e, extensions).expect("write extensions");
    (
        b,
        e,
        format!("{root}/app/reload/{}", fake_tenant::TENANT_ID),
    )
}

/// Starts `consumer run` and returns once it is subscribed.
async fn spawn_consumer(bin: &str, butler: &Path, extensions: &Path) -> Child {
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(butler)
        .arg("--extensions")
        .arg(extensions)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("consumer binary starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("subscribed with QoS 1")
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
            if line.contains("panicked") || line.contains("ERROR") {
                eprintln!("consumer: {line}");
            }
        }
    });
    tokio::time::timeout(Duration::from_secs(30), rx)
        .await
        .expect("consumer subscribes within 30 s")
        .expect("consumer log");
    child
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn events(n: usize) -> Vec<(String, Vec<u8>)> {
    let sample = testkit::sample("app-reload-failed.cloudevents.json");
    let base: Value = serde_json::from_slice(&sample).expect("sample");
    (0..n)
        .map(|i| {
            let id = format!("bench-{}-{i}", std::process::id());
            let mut v = base.clone();
            v["id"] = Value::String(id.clone());
            v["data"]["reloadId"] = Value::String(format!("reload-{id}"));
            (id, serde_json::to_vec(&v).expect("serializes"))
        })
        .collect()
}

/// Publishes every event with QoS 1 and returns once the broker acknowledged all.
async fn publish_all(broker: &testkit::TestBroker, topic: &str, events: &[(String, Vec<u8>)]) {
    let mut options = MqttOptions::new(testkit::unique("bench-pub"), &broker.host, broker.port);
    options.set_inflight(100);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let total = events.len();
    let payloads: Vec<Vec<u8>> = events.iter().map(|(_, p)| p.clone()).collect();
    let topic = topic.to_owned();
    tokio::spawn(async move {
        for payload in payloads {
            if client
                .publish(&topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let mut acked = 0;
    while acked < total {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
            Ok(_) => {}
            Err(e) => panic!("publishing: {e}"),
        }
    }
}

/// Waits until `want` distinct alerts arrived (returns when) or nothing new came for `quiet`.
async fn wait_for(counts: &Counts, want: usize, quiet: Duration) -> Option<Instant> {
    loop {
        // Registered before reading, so an alert arriving in between still wakes us.
        let notified = counts.1.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let before = distinct_and_total(counts);
        if before.0 >= want {
            return Some(Instant::now());
        }
        if tokio::time::timeout(quiet, notified).await.is_err()
            && distinct_and_total(counts) == before
        {
            return None;
        }
    }
}

/// The stand-ins' own capacity: requests per second they answer.
async fn stand_in_capacity(url: &str, jwt: Option<&str>, post: bool) -> f64 {
    let client = reqwest::Client::new();
    let n = 4000;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..16 {
        let (client, url, jwt) = (client.clone(), url.to_owned(), jwt.map(str::to_owned));
        tasks.spawn(async move {
            for i in 0..n / 16 {
                let request = if post {
                    client
                        .post(&url)
                        .body(format!("{{\"eventId\":\"capacity-{worker}-{i}\"}}"))
                } else {
                    client.get(&url)
                };
                let request = match &jwt {
                    Some(jwt) => request.bearer_auth(jwt),
                    None => request,
                };
                let _ = request.send().await.map(|r| r.status());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    f64::from(n) / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let bin = std::env::var("CONSUMER_BIN").unwrap_or_else(|_| "target/release/consumer".into());
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let broker = testkit::mosquitto().unwrap_or_else(testkit::embedded);
    let mut data = TenantData::default();
    let burst = events(n);
    let kill_burst = events(n)
        .into_iter()
        .map(|(id, body)| (format!("{id}-k"), body))
        .collect::<Vec<_>>();
    data.reload_ids = burst
        .iter()
        .chain(kill_burst.iter())
        .map(|(id, _)| format!("reload-{id}"))
        .collect();
    let tenant = FakeTenant::start_with(data).await;
    let (hook, counts) = start_receiver().await;
    println!(
        "consumer: {bin}\nbroker: {} ({}:{})",
        broker.name, broker.host, broker.port
    );

    let app_url = format!("{}/api/v1/apps/{}", tenant.url(), fake_tenant::APP_ID);
    let tenant_rps = stand_in_capacity(&app_url, Some(&tenant.jwt()), false).await;
    let receiver_rps = stand_in_capacity(&hook, None, true).await;
    counts.0.lock().expect("counts").clear();
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("temp dir");
    let topic = format!("{}/capacity", testkit::unique("bench"));
    publish_all(&broker, &topic, &burst).await;
    let broker_rate = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "stand-ins: fake tenant {tenant_rps:.0} req/s, webhook receiver {receiver_rps:.0} req/s, \
         broker {broker_rate:.0} QoS 1 publishes/s"
    );

    // 1. Burst.
    let (butler, extensions, topic) = write_config(dir.path(), &broker, &tenant, &hook);
    let child = spawn_consumer(&bin, &butler, &extensions).await;
    let pid = child.id().expect("pid");
    let requests_before = tenant.requests().len();
    let started = Instant::now();
    publish_all(&broker, &topic, &burst).await;
    let done = wait_for(&counts, n, Duration::from_secs(30)).await;
    let rss = peak_rss_kib(pid).unwrap_or(0);
    let (distinct, total) = distinct_and_total(&counts);
    match done {
        Some(at) => {
            let secs = at.duration_since(started).as_secs_f64();
            println!(
                "burst: {n} events -> {distinct} alerts in {secs:.2} s = {:.1} alerts/s; peak RSS {:.1} MiB",
                distinct as f64 / secs,
                rss as f64 / 1024.0
            );
        }
        None => println!(
            "burst: only {distinct} of {n} alerted (no progress for 30 s); peak RSS {:.1} MiB",
            rss as f64 / 1024.0
        ),
    }
    println!(
        "burst: {} tenant API requests, {total} webhook requests",
        tenant.requests().len() - requests_before
    );
    drop(child);

    // 2. Kill/restart.
    counts.0.lock().expect("counts").clear();
    let dir = tempfile::tempdir().expect("temp dir");
    let (butler, extensions, topic) = write_config(dir.path(), &broker, &tenant, &hook);
    let mut child = spawn_consumer(&bin, &butler, &extensions).await;
    publish_all(&broker, &topic, &kill_burst).await;
    let mut kills = 0;
    for fraction in [4, 2] {
        let at = n / fraction;
        if wait_for(&counts, at, Duration::from_secs(30))
            .await
            .is_some()
        {
            let _ = child.kill().await;
            let _ = child.wait().await;
            kills += 1;
            child = spawn_consumer(&bin, &butler, &extensions).await;
        }
    }
    // A third kill at once after a restart, while the redelivered backlog is being handled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = child.kill().await;
    let _ = child.wait().await;
    kills += 1;
    let child = spawn_consumer(&bin, &butler, &extensions).await;
    wait_for(&counts, n, Duration::from_secs(30)).await;
    // Give late duplicates a moment to show.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (distinct, total) = distinct_and_total(&counts);
    println!(
        "kill/restart: {kills} SIGKILLs; events {n}, alerts {total}, lost {}, duplicates {}",
        n.saturating_sub(distinct),
        total.saturating_sub(distinct as u64)
    );
    drop(child);
}
