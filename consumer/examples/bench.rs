//! Consumer benchmark: drives a consumer *binary* from outside, so today's and an older (or a
//! newer) build can be measured the same way. It prints figures; it asserts nothing about speed.
//!
//! ```text
//! cargo build --release -p consumer
//! CONSUMER_BIN=target/release/consumer cargo run --release -p consumer --example bench
//! ```
//!
//! Stand-ins, all on 127.0.0.1: Mosquitto on 127.0.0.1:1883 when it answers (else the embedded
//! rumqttd), the tests' fake tenant (`testkit::fake_tenant`) for enrichment,
//! once answering at once and once after 100 ms, webhook receivers that count alerts by event
//! id, and a webhook that accepts requests and never answers. Their own capacity is measured
//! first (requests/s, and the time one request takes on a kept-alive connection, which would
//! show a 40 ms delayed-ACK stall), so they are not what is measured afterwards.
//!
//! Scenarios (`BENCH_SCENARIOS=burst,slow-tenant,hang,kill`, default all, in that order):
//!
//! - `burst`: 1,000 failed-reload events published at once; time from the first publish to the
//!   last distinct alert, alerts/s, and the consumer's peak RSS (`VmHWM`).
//! - `slow-tenant`: the tenant answers every request after 100 ms; 300 failed reloads published
//!   at once; time from the first publish to the 300th distinct alert.
//! - `hang`: two webhook destinations, a healthy one and one that never answers, with the
//!   default retry (5 attempts, 1 s doubling to 60 s) and webhook timeout (10 s); 50 failed
//!   reloads at once; how many reached the healthy one within 30 s (waiting at most 60 s), and
//!   when the 50th did.
//! - `kill`: the burst again, the consumer SIGKILLed three times mid-burst and restarted;
//!   events, alerts, lost (never alerted) and duplicates (alerted more than once).
//!
//! A summary table with each figure beside its target ends the run. Every wait is bounded, and
//! every consumer started is killed before the bench ends.
//!
//! Environment: `CONSUMER_BIN` (default `target/release/consumer`), `BENCH_SCENARIOS`,
//! `BENCH_EVENTS` (burst and kill size, default 1000), `BENCH_SLOW_EVENTS` (300),
//! `BENCH_SLOW_CAP_SECS` (longest wait for the slow-tenant alerts, 120), `BENCH_HANG_EVENTS`
//! (50), `BENCH_READY_LINE` (the consumer's log line that says it is subscribed, default
//! `subscribed with QoS 1`), `BENCH_LOG_DIR` (keep each consumer's log there), `BENCH_BROKER`
//! (`mosquitto` or `embedded`; default Mosquitto when it answers).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::serve::ListenerExt;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use testkit::butler::{Config, Tenant, Webhook};
use testkit::fake_tenant::{self, FakeTenant};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// The tenant latency of the slow-tenant scenario.
const SLOW: Duration = Duration::from_millis(100);
/// Concurrent clients used to measure the slow tenant's capacity.
const SLOW_CLIENTS: usize = 64;
/// A stand-in answering one request on a kept-alive connection slower than this (above its own
/// latency) would be what is measured: a 40 ms delayed-ACK stall shows up here.
const STALL: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------- stand-ins

/// When each event id's alerts arrived at a receiver.
#[derive(Debug, Clone)]
struct Arrival {
    count: u32,
    first: Instant,
}

type Arrivals = Arc<(Mutex<HashMap<String, Arrival>>, Notify)>;

/// Serves `app` on 127.0.0.1 (an ephemeral port), writing with `TCP_NODELAY`.
async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("addr");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// A webhook destination that answers 200 and records the arrival of each event id's alerts.
async fn start_receiver() -> (String, Arrivals) {
    let arrivals: Arrivals = Arc::new((Mutex::new(HashMap::new()), Notify::new()));
    let app = axum::Router::new()
        .fallback(|State(arrivals): State<Arrivals>, body: Bytes| async move {
            let id = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["eventId"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let now = Instant::now();
            if let Ok(mut map) = arrivals.0.lock() {
                map.entry(id)
                    .or_insert(Arrival {
                        count: 0,
                        first: now,
                    })
                    .count += 1;
            }
            arrivals.1.notify_waiters();
            "ok"
        })
        .with_state(Arc::clone(&arrivals));
    let addr = serve(app).await;
    (format!("http://{addr}/hook"), arrivals)
}

/// A webhook destination that reads each request and never answers; counts the requests.
async fn start_hanging() -> (String, Arc<AtomicUsize>) {
    let requests = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .fallback(
            |State(requests): State<Arc<AtomicUsize>>, _body: Bytes| async move {
                requests.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<&'static str>().await
            },
        )
        .with_state(Arc::clone(&requests));
    let addr = serve(app).await;
    (format!("http://{addr}/hook"), requests)
}

fn distinct_and_total(arrivals: &Arrivals) -> (usize, u64) {
    // Counted under the lock, not copied: this runs at every alert, beside the consumer.
    arrivals
        .0
        .lock()
        .map(|m| (m.len(), m.values().map(|a| u64::from(a.count)).sum()))
        .unwrap_or_default()
}

/// Seconds after `started` at which each distinct event id first arrived, in order.
fn first_arrivals(arrivals: &Arrivals, started: Instant) -> Vec<f64> {
    let map = arrivals.0.lock().map(|m| m.clone()).unwrap_or_default();
    let mut at: Vec<f64> = map
        .values()
        .map(|a| a.first.saturating_duration_since(started).as_secs_f64())
        .collect();
    at.sort_by(f64::total_cmp);
    at
}

/// The time of the `n`th distinct alert (1-based), if it came.
fn nth(at: &[f64], n: usize) -> Option<f64> {
    n.checked_sub(1).and_then(|i| at.get(i)).copied()
}

fn within(at: &[f64], secs: f64) -> usize {
    at.iter().filter(|t| **t <= secs).count()
}

/// Waits until `want` distinct alerts arrived (true), or nothing new came for `quiet`, or `cap`
/// passed (false).
async fn wait_for(arrivals: &Arrivals, want: usize, quiet: Duration, cap: Duration) -> bool {
    let deadline = Instant::now() + cap;
    loop {
        // Registered before reading, so an alert arriving in between still wakes us.
        let notified = arrivals.1.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let before = distinct_and_total(arrivals);
        if before.0 >= want {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        let wait = quiet.min(deadline - now);
        if tokio::time::timeout(wait, notified).await.is_err()
            && wait == quiet
            && distinct_and_total(arrivals) == before
        {
            return false;
        }
    }
}

/// A stand-in's capacity: requests per second it answers to `clients` concurrent clients.
async fn capacity(url: &str, jwt: Option<&str>, post: bool, clients: usize, total: usize) -> f64 {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .expect("client");
    let per_client = total / clients;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let (client, url, jwt) = (client.clone(), url.to_owned(), jwt.map(str::to_owned));
        tasks.spawn(async move {
            for i in 0..per_client {
                let _ = request(
                    &client,
                    &url,
                    jwt.as_deref(),
                    post,
                    &format!("{worker}-{i}"),
                )
                .send()
                .await
                .map(|r| r.status());
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    (per_client * clients) as f64 / started.elapsed().as_secs_f64()
}

fn request(
    client: &reqwest::Client,
    url: &str,
    jwt: Option<&str>,
    post: bool,
    tag: &str,
) -> reqwest::RequestBuilder {
    let request = if post {
        client
            .post(url)
            .body(format!("{{\"eventId\":\"capacity-{tag}\"}}"))
    } else {
        client.get(url)
    };
    match jwt {
        Some(jwt) => request.bearer_auth(jwt),
        None => request,
    }
}

/// The median and the longest time one request takes, one after the other on one kept-alive
/// connection (the first, which connects, not counted).
async fn one_by_one(url: &str, jwt: Option<&str>, post: bool, n: usize) -> (Duration, Duration) {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let mut times = Vec::with_capacity(n);
    for i in 0..=n {
        let started = Instant::now();
        if let Ok(response) = request(&client, url, jwt, post, &format!("serial-{i}"))
            .send()
            .await
        {
            let _ = response.bytes().await;
        }
        if i > 0 {
            times.push(started.elapsed());
        }
    }
    times.sort();
    (
        times.get(times.len() / 2).copied().unwrap_or_default(),
        times.last().copied().unwrap_or_default(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The one-minute load average, to note beside each figure.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// CPU time (clock ticks) of a process, all its threads: `utime` + `stime` of `/proc/<pid>/stat`.
fn cpu_ticks(pid: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name, in parentheses, may hold spaces: fields are counted after it.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// CPU time of the stand-ins: this process and the broker (every `mosquitto` process).
fn stand_in_ticks() -> u64 {
    let mosquitto: u64 = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            std::fs::read_to_string(e.path().join("comm")).is_ok_and(|c| c.trim() == "mosquitto")
        })
        .map(|e| cpu_ticks(&e.file_name().to_string_lossy()))
        .sum();
    cpu_ticks("self") + mosquitto
}

/// The machine's (all CPUs, clock ticks) total and busy time from `/proc/stat`, and its CPUs.
fn machine_ticks() -> (u64, u64, usize) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let cpus = stat
        .lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = ticks.iter().sum();
    // idle and iowait
    let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
    (total, total.saturating_sub(idle), cpus.max(1))
}

/// How busy the machine was while a scenario ran, beside what the scenario itself used: the
/// load average at its start, and in cores the CPU used by everything but the bench, the
/// broker and the consumers it started ("others": other builds, the noise), and by the
/// consumers.
struct Meter {
    load: String,
    total: u64,
    busy: u64,
    stand_ins: u64,
    consumers: u64,
}

impl Meter {
    fn start() -> Self {
        let (total, busy, _) = machine_ticks();
        Self {
            load: load(),
            total,
            busy,
            stand_ins: stand_in_ticks(),
            consumers: 0,
        }
    }

    /// Counts a consumer's CPU time: call it just before the consumer ends.
    fn consumer(&mut self, child: &Child) {
        if let Some(pid) = child.id() {
            self.consumers += cpu_ticks(&pid.to_string());
        }
    }

    /// `load 2.1, others 0.3 cores, consumer 0.6`.
    fn finish(&self) -> String {
        let (total, busy, cpus) = machine_ticks();
        let elapsed = total.saturating_sub(self.total).max(1) as f64 / cpus as f64;
        let cores = |ticks: u64| ticks as f64 / elapsed;
        let ours = stand_in_ticks().saturating_sub(self.stand_ins) + self.consumers;
        let others = format!(
            "load {}, others {:.1} cores",
            self.load,
            cores(busy.saturating_sub(self.busy).saturating_sub(ours))
        );
        match self.consumers {
            0 => others,
            ticks => format!("{others}, consumer {:.1}", cores(ticks)),
        }
    }
}

// ---------------------------------------------------------------- the consumer

struct Written {
    butler: PathBuf,
    extensions: PathBuf,
    /// Events are published here.
    topic: String,
    client_id: String,
}

/// A Butler file and an extension file: one tenant at `tenant`, the given generic webhooks,
/// everything else (retry, webhook timeout, enrichment) at its default.
fn write_config(
    dir: &Path,
    broker: &testkit::TestBroker,
    tenant: &FakeTenant,
    webhooks: &[(&str, &str)],
) -> Written {
    let root = testkit::unique("bench");
    let client_id = testkit::unique("bench-consumer");
    let tenant = Tenant::new(fake_tenant::TENANT_ID, &tenant.url(), &tenant.jwt());
    let mut config = Config::new(&broker.into(), &root, &tenant);
    config
        .client(&client_id)
        .consumer("stateDirectory", dir.join("state").display().to_string())
        .consumer(
            "deadLetterDirectory",
            dir.join("dead-letter").display().to_string(),
        )
        .consumer("destinations.log.enable", false);
    for (name, url) in webhooks {
        config.webhook(&Webhook::new(name, url));
    }
    // An older consumer rejects keys it does not know: only written when asked for.
    if let Ok(concurrency) = std::env::var("BENCH_CONCURRENCY") {
        let n: u64 = concurrency.parse().expect("BENCH_CONCURRENCY is a number");
        config.consumer("concurrency", n);
    }
    let (butler, extensions) = config.write(dir);
    Written {
        butler,
        extensions,
        topic: format!("{root}/app/reload/{}", fake_tenant::TENANT_ID),
        client_id,
    }
}

/// Starts `consumer run` and returns once it says it is subscribed (within 30 s, else panics
/// with its last log lines; the child is killed when dropped). With `BENCH_LOG_DIR` set, its log
/// is appended to `<dir>/<client id>.log` (restarts included).
async fn spawn_consumer(bin: &str, config: &Written) -> Child {
    let ready =
        std::env::var("BENCH_READY_LINE").unwrap_or_else(|_| "subscribed with QoS 1".into());
    let mut log_file = std::env::var_os("BENCH_LOG_DIR").map(|dir| {
        let path = PathBuf::from(dir).join(format!("{}.log", config.client_id));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("BENCH_LOG_DIR: {}: {e}", path.display()))
    });
    let mut child = Command::new(bin)
        .args(["run", "--config"])
        .arg(&config.butler)
        .arg("--extensions")
        .arg(&config.extensions)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("consumer binary {bin} starts: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let last = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let tail = Arc::clone(&last);
    let needle = ready.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(stderr).lines();
        let mut tx = Some(tx);
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains(&needle)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
            if line.contains("panicked") || line.contains("ERROR") {
                eprintln!("consumer: {line}");
            }
            if let Some(file) = &mut log_file {
                use std::io::Write;
                let _ = writeln!(file, "{line}");
            }
            if let Ok(mut tail) = tail.lock() {
                if tail.len() == 20 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        }
    });
    if !matches!(
        tokio::time::timeout(Duration::from_secs(30), rx).await,
        Ok(Ok(()))
    ) {
        let tail: Vec<String> = last
            .lock()
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        panic!(
            "the consumer did not say `{ready}` within 30 s (or ended); its last log lines:\n{}",
            tail.join("\n")
        );
    }
    child
}

/// SIGKILLs the consumer, waits for it, and has the broker forget its persistent session (and
/// the messages it kept for it).
async fn stop_consumer(mut child: Child, broker: &testkit::TestBroker, client_id: &str) {
    let _ = child.kill().await;
    let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
    options.set_clean_session(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let connected = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return,
                Ok(_) => {}
                Err(_) => return,
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), connected).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), eventloop.poll()).await;
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// `n` failed-reload events, each its own event id and reload id (the consumer alerts once per
/// reload). The reload ids are runs of the fake tenant's known reload, so it enriches them.
fn events(n: usize, tag: &str) -> Vec<(String, Vec<u8>)> {
    let sample = testkit::sample("app-reload-failed.cloudevents.json");
    let base: Value = serde_json::from_slice(&sample).expect("sample");
    (0..n)
        .map(|i| {
            let id = format!("bench-{}-{tag}-{i}", std::process::id());
            let mut v = base.clone();
            v["id"] = Value::String(id.clone());
            v["data"]["reloadId"] = Value::String(format!("{}.{id}", fake_tenant::RELOAD_ID));
            (id, serde_json::to_vec(&v).expect("serializes"))
        })
        .collect()
}

/// Publishes every event with QoS 1 and returns once the broker acknowledged all (or after 60 s).
async fn publish_all(broker: &testkit::TestBroker, topic: &str, events: &[(String, Vec<u8>)]) {
    let mut options = MqttOptions::new(testkit::unique("bench-pub"), &broker.host, broker.port);
    options.set_inflight(100);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 200);
    let total = events.len();
    let payloads: Vec<Vec<u8>> = events.iter().map(|(_, p)| p.clone()).collect();
    let topic = topic.to_owned();
    let publisher = client.clone();
    tokio::spawn(async move {
        for payload in payloads {
            if publisher
                .publish(&topic, QoS::AtLeastOnce, false, payload)
                .await
                .is_err()
            {
                return;
            }
        }
    });
    let acked = async {
        let mut acked = 0;
        while acked < total {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("publishing: {e}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), acked)
        .await
        .expect("the broker acknowledges every publish within 60 s");
    let _ = client.disconnect().await;
}

// ---------------------------------------------------------------- scenarios

/// One line of the closing summary.
struct Row {
    scenario: &'static str,
    figure: String,
    target: &'static str,
    load: String,
}

struct Bench {
    bin: String,
    broker: testkit::TestBroker,
    tenant: FakeTenant,
    slow_tenant: FakeTenant,
    rows: Vec<Row>,
}

impl Bench {
    fn row(&mut self, scenario: &'static str, figure: String, target: &'static str, load: String) {
        self.rows.push(Row {
            scenario,
            figure,
            target,
            load,
        });
    }

    /// Stand-ins' own capacity, and the time of one request on a kept-alive connection.
    async fn stand_ins(&mut self, n: usize) {
        let meter = Meter::start();
        let app = |t: &FakeTenant| format!("{}/api/v1/apps/{}", t.url(), fake_tenant::APP_ID);
        let (tenant_url, slow_url, jwt) =
            (app(&self.tenant), app(&self.slow_tenant), self.tenant.jwt());
        let (hook, _) = start_receiver().await;
        let tenant_rps = capacity(&tenant_url, Some(&jwt), false, 16, 4000).await;
        let slow_rps = capacity(
            &slow_url,
            Some(&jwt),
            false,
            SLOW_CLIENTS,
            SLOW_CLIENTS * 10,
        )
        .await;
        let receiver_rps = capacity(&hook, None, true, 16, 4000).await;
        let topic = format!("{}/capacity", testkit::unique("bench"));
        let batch = events(n, "capacity");
        let started = Instant::now();
        publish_all(&self.broker, &topic, &batch).await;
        let broker_rate = n as f64 / started.elapsed().as_secs_f64();
        println!(
            "stand-ins: fake tenant {tenant_rps:.0} req/s (16 clients), tenant with \
             {} latency {slow_rps:.0} req/s ({SLOW_CLIENTS} clients; {:.0} at most), webhook \
             receiver {receiver_rps:.0} req/s (16 clients), broker {broker_rate:.0} QoS 1 publishes/s",
            ms(SLOW),
            SLOW_CLIENTS as f64 / SLOW.as_secs_f64()
        );
        let (tenant_p50, tenant_max) = one_by_one(&tenant_url, Some(&jwt), false, 50).await;
        let (slow_p50, slow_max) = one_by_one(&slow_url, Some(&jwt), false, 10).await;
        let (hook_p50, hook_max) = one_by_one(&hook, None, true, 50).await;
        let load = meter.finish();
        println!("stand-ins measured with {load}");
        let stalled = tenant_p50 > STALL || hook_p50 > STALL || slow_p50 > SLOW + STALL;
        println!(
            "stand-ins, one request at a time on one connection (median / max): fake tenant {} / \
             {}, slow tenant {} / {}, webhook receiver {} / {}: {}",
            ms(tenant_p50),
            ms(tenant_max),
            ms(slow_p50),
            ms(slow_max),
            ms(hook_p50),
            ms(hook_max),
            if stalled {
                "SLOWER than expected: a delayed-ACK stall? Figures below are suspect"
            } else {
                "no delayed-ACK stall"
            }
        );
        self.row(
            "stand-ins: capacity",
            format!(
                "tenant {tenant_rps:.0}/s, 100 ms tenant {slow_rps:.0}/s ({SLOW_CLIENTS} clients), \
                 receiver {receiver_rps:.0}/s, broker {broker_rate:.0} pub/s"
            ),
            "not the limit",
            load.clone(),
        );
        self.row(
            "stand-ins: one request",
            format!(
                "tenant {}, 100 ms tenant {}, receiver {}",
                ms(tenant_p50),
                ms(slow_p50),
                ms(hook_p50)
            ),
            "no 40 ms stall",
            load,
        );
    }

    /// 1. Burst: `n` events at once against the fast tenant.
    async fn burst(&mut self, n: usize) {
        let mut meter = Meter::start();
        let (hook, arrivals) = start_receiver().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), &self.broker, &self.tenant, &[("bench", &hook)]);
        let batch = events(n, "burst");
        let child = spawn_consumer(&self.bin, &config).await;
        let pid = child.id().expect("pid");
        let requests_before = self.tenant.requests().len();
        let started = Instant::now();
        publish_all(&self.broker, &config.topic, &batch).await;
        wait_for(
            &arrivals,
            n,
            Duration::from_secs(30),
            Duration::from_secs(600),
        )
        .await;
        let rss = peak_rss_kib(pid).unwrap_or(0);
        meter.consumer(&child);
        stop_consumer(child, &self.broker, &config.client_id).await;
        let at = first_arrivals(&arrivals, started);
        let (distinct, total) = distinct_and_total(&arrivals);
        let load = meter.finish();
        let figure = match nth(&at, n) {
            Some(secs) => {
                println!(
                    "burst ({load}): {n} events -> {distinct} alerts in {secs:.2} s = {:.1} \
                     alerts/s; peak RSS {}",
                    distinct as f64 / secs,
                    mib(rss)
                );
                format!(
                    "{n} in {secs:.2} s = {:.0} alerts/s",
                    distinct as f64 / secs
                )
            }
            None => {
                println!(
                    "burst ({load}): only {distinct} of {n} alerted (no progress for 30 s); \
                     peak RSS {}",
                    mib(rss)
                );
                format!("only {distinct} of {n}")
            }
        };
        println!(
            "burst: {} tenant API requests, {total} webhook requests",
            self.tenant.requests().len() - requests_before
        );
        self.row("burst", figure, "1,000 in ≤ 2 s", load.clone());
        self.row("burst: peak RSS", mib(rss), "reported", load);
    }

    /// 2. Slow tenant: every tenant answer after 100 ms.
    async fn slow_tenant(&mut self, n: usize, cap: Duration) {
        let mut meter = Meter::start();
        let (hook, arrivals) = start_receiver().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(
            dir.path(),
            &self.broker,
            &self.slow_tenant,
            &[("bench", &hook)],
        );
        let batch = events(n, "slow");
        let child = spawn_consumer(&self.bin, &config).await;
        let pid = child.id().expect("pid");
        let requests_before = self.slow_tenant.requests().len();
        let started = Instant::now();
        publish_all(&self.broker, &config.topic, &batch).await;
        wait_for(&arrivals, n, Duration::from_secs(30), cap).await;
        let waited = started.elapsed().as_secs_f64();
        let rss = peak_rss_kib(pid).unwrap_or(0);
        meter.consumer(&child);
        stop_consumer(child, &self.broker, &config.client_id).await;
        let at = first_arrivals(&arrivals, started);
        let load = meter.finish();
        let by_5 = within(&at, 5.0);
        let figure = match nth(&at, n) {
            Some(secs) => {
                println!(
                    "slow tenant ({load}): {n} events -> {n} alerts in {secs:.2} s = {:.1} \
                     alerts/s; {by_5} within 5 s; peak RSS {}",
                    n as f64 / secs,
                    mib(rss)
                );
                format!("{n} in {secs:.2} s ({by_5} within 5 s)")
            }
            None => {
                let rate = at.len() as f64 / waited;
                println!(
                    "slow tenant ({load}): only {} of {n} alerted after {waited:.0} s \
                     ({rate:.1} alerts/s, so all {n} in about {:.0} s); {by_5} within 5 s; peak RSS {}",
                    at.len(),
                    n as f64 / rate.max(f64::MIN_POSITIVE),
                    mib(rss)
                );
                format!(
                    "only {} of {n} in {waited:.0} s ({rate:.1}/s; {by_5} within 5 s)",
                    at.len()
                )
            }
        };
        println!(
            "slow tenant: {} tenant API requests",
            self.slow_tenant.requests().len() - requests_before
        );
        self.row("slow tenant (100 ms)", figure, "300 in ≤ 5 s", load);
    }

    /// 3. A healthy destination beside one that never answers.
    async fn hang(&mut self, n: usize) {
        let mut meter = Meter::start();
        let (healthy, arrivals) = start_receiver().await;
        let (hanging, hung) = start_hanging().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(
            dir.path(),
            &self.broker,
            &self.tenant,
            &[("hanging", &hanging), ("healthy", &healthy)],
        );
        let batch = events(n, "hang");
        let child = spawn_consumer(&self.bin, &config).await;
        let pid = child.id().expect("pid");
        let started = Instant::now();
        publish_all(&self.broker, &config.topic, &batch).await;
        // No "quiet" cut-off: a consumer waiting out the hanging webhook's timeouts sends nothing
        // for a minute, and the figure at 60 s is what is asked.
        let cap = Duration::from_secs(60);
        wait_for(&arrivals, n, cap, cap).await;
        let rss = peak_rss_kib(pid).unwrap_or(0);
        let hung_requests = hung.load(Ordering::SeqCst);
        meter.consumer(&child);
        stop_consumer(child, &self.broker, &config.client_id).await;
        let at = first_arrivals(&arrivals, started);
        let load = meter.finish();
        let (by_30, by_60) = (within(&at, 30.0), within(&at, 60.0));
        let last = match nth(&at, n) {
            Some(secs) => format!("alert #{n} at {secs:.2} s"),
            None => format!("alert #{n} not within 60 s"),
        };
        println!(
            "hanging destination ({load}): {n} events -> healthy destination got {by_30} \
             within 30 s, {by_60} within 60 s, {last}; the hanging one got {hung_requests} \
             requests; peak RSS {}",
            mib(rss)
        );
        self.row(
            "hang: healthy destination",
            format!("{by_30}/{n} within 30 s ({by_60} within 60 s); {last}"),
            "50/50 within 30 s",
            load,
        );
    }

    /// 4. Kill/restart: SIGKILL three times during a burst.
    async fn kill(&mut self, n: usize) {
        let mut meter = Meter::start();
        let (hook, arrivals) = start_receiver().await;
        let dir = tempfile::tempdir().expect("temp dir");
        let config = write_config(dir.path(), &self.broker, &self.tenant, &[("bench", &hook)]);
        let batch = events(n, "kill");
        let quiet = Duration::from_secs(30);
        let cap = Duration::from_secs(600);
        let mut child = spawn_consumer(&self.bin, &config).await;
        publish_all(&self.broker, &config.topic, &batch).await;
        let mut kills = 0;
        for fraction in [4, 2] {
            if wait_for(&arrivals, n / fraction, quiet, cap).await {
                meter.consumer(&child);
                let _ = child.kill().await;
                kills += 1;
                child = spawn_consumer(&self.bin, &config).await;
            }
        }
        // A third kill at once after a restart, while the redelivered backlog is being handled.
        tokio::time::sleep(Duration::from_millis(300)).await;
        meter.consumer(&child);
        let _ = child.kill().await;
        kills += 1;
        let child = spawn_consumer(&self.bin, &config).await;
        wait_for(&arrivals, n, quiet, cap).await;
        // Give late duplicates a moment to show.
        tokio::time::sleep(Duration::from_secs(2)).await;
        meter.consumer(&child);
        stop_consumer(child, &self.broker, &config.client_id).await;
        let (distinct, total) = distinct_and_total(&arrivals);
        let (lost, duplicates) = (
            n.saturating_sub(distinct),
            total.saturating_sub(distinct as u64),
        );
        let load = meter.finish();
        println!(
            "kill/restart ({load}): {kills} SIGKILLs; events {n}, alerts {total}, lost \
             {lost}, duplicates {duplicates}"
        );
        self.row(
            "kill/restart ×3",
            format!("events {n}, alerts {total}, lost {lost}, duplicates {duplicates}"),
            "lost 0",
            load,
        );
    }

    fn summary(&self) {
        println!("\nsummary: {}, broker {}", self.bin, self.broker.name);
        let header = ["scenario", "figure", "target", "machine while it ran"];
        let rows: Vec<[&str; 4]> = self
            .rows
            .iter()
            .map(|r| [r.scenario, r.figure.as_str(), r.target, r.load.as_str()])
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for row in &rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[&str; 4]| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c}{}", " ".repeat(w - c.chars().count())))
                .collect();
            println!("| {} |", padded.join(" | "));
        };
        line(&header);
        let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
        println!("|-{}-|", rule.join("-|-"));
        for row in &rows {
            line(row);
        }
    }
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let bin = std::env::var("CONSUMER_BIN").unwrap_or_else(|_| "target/release/consumer".into());
    let n = env_usize("BENCH_EVENTS", 1000);
    let slow_n = env_usize("BENCH_SLOW_EVENTS", 300);
    let slow_cap = Duration::from_secs(env_usize("BENCH_SLOW_CAP_SECS", 120) as u64);
    let hang_n = env_usize("BENCH_HANG_EVENTS", 50);
    let known = ["burst", "slow-tenant", "hang", "kill"];
    let scenarios: Vec<String> = match std::env::var("BENCH_SCENARIOS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect(),
        _ => known.iter().map(|s| (*s).to_owned()).collect(),
    };
    if let Some(unknown) = scenarios.iter().find(|s| !known.contains(&s.as_str())) {
        eprintln!(
            "BENCH_SCENARIOS: unknown scenario `{unknown}` (known: {})",
            known.join(",")
        );
        std::process::exit(2);
    }
    let on = |name: &str| scenarios.iter().any(|s| s == name);

    let broker = match std::env::var("BENCH_BROKER").as_deref() {
        Ok("embedded") => testkit::embedded(),
        Ok("mosquitto") => testkit::mosquitto().unwrap_or_else(|| {
            eprintln!("BENCH_BROKER=mosquitto: nothing answers on 127.0.0.1:1883");
            std::process::exit(2);
        }),
        Ok(other) if !other.is_empty() => {
            eprintln!("BENCH_BROKER: `{other}` is neither `mosquitto` nor `embedded`");
            std::process::exit(2);
        }
        _ => testkit::mosquitto().unwrap_or_else(testkit::embedded),
    };
    let tenant = FakeTenant::start().await;
    let slow_tenant = FakeTenant::start().await;
    slow_tenant.set_latency(SLOW);
    println!(
        "consumer: {bin}\nbroker: {} ({}:{})\nscenarios: {}",
        broker.name,
        broker.host,
        broker.port,
        scenarios.join(",")
    );
    let mut bench = Bench {
        bin,
        broker,
        tenant,
        slow_tenant,
        rows: Vec::new(),
    };
    bench.stand_ins(n).await;
    if on("burst") {
        bench.burst(n).await;
    }
    if on("slow-tenant") {
        bench.slow_tenant(slow_n, slow_cap).await;
    }
    if on("hang") {
        bench.hang(hang_n).await;
    }
    if on("kill") {
        bench.kill(n).await;
    }
    bench.summary();
}
