//! Figures for the relay, printed (not asserted): `cargo bench -p relay-fn`.
//!
//! 1. The pure decision (HMAC verify + envelope parse + route) per request.
//! 2. The real release binary in HTTP mode against each test broker: throughput and latency
//!    percentiles for sequential and concurrent signed requests, each confirmed by a PUBACK,
//!    and the process's peak resident memory afterwards.

use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method};
use qlik_events::{TopicRouting, WebhookSecrets};
use relay_fn::decision::{Body, Policy, WebhookRequest, decide};

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn bench_decision() {
    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let mut headers = HeaderMap::new();
    headers.insert(
        "qlik-signature",
        HeaderValue::from_str(&testkit::signature(&body)).expect("hex is a header value"),
    );
    let policy = Policy {
        secrets: WebhookSecrets::from_list(testkit::TEST_SECRET).expect("test secret is valid"),
        max_body_bytes: 256 * 1024,
        allowed_tenants: None,
        max_event_age: None,
        required_header: None,
        routing: TopicRouting::default(),
        butler_compat: false,
    };
    let request = WebhookRequest {
        method: &Method::POST,
        headers: &headers,
        body: Body::Complete(&body),
    };
    let now = time::OffsetDateTime::now_utc();
    let iterations = 100_000u32;
    let started = Instant::now();
    for _ in 0..iterations {
        std::hint::black_box(decide(std::hint::black_box(&request), &policy, now).is_ok());
    }
    let per = started.elapsed() / iterations;
    println!(
        "decision (verify + parse + route, {} byte body): {:.2} µs/request, {:.0} requests/s on one core",
        body.len(),
        per.as_nanos() as f64 / 1000.0,
        1e9 / per.as_nanos() as f64
    );
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn bench_binary(broker: &testkit::TestBroker, binary: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Child(
        std::process::Command::new(binary)
            .env_clear()
            .env("WEBHOOK_SECRET", testkit::TEST_SECRET)
            .env("MQTT_URL", broker.url())
            .env("MQTT_TOPIC_ROOT", testkit::unique("bench"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "error")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("relay binary starts"),
    );
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "relay did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let signature = testkit::signature(&body);
    for concurrency in [1usize, 32] {
        let total = 2_000usize;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..concurrency {
            let (client, url, body, signature) =
                (client.clone(), url.clone(), body.clone(), signature.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in (worker..total).step_by(concurrency) {
                    let t = Instant::now();
                    let response = client
                        .post(&url)
                        .header("qlik-signature", &signature)
                        .body(body.clone())
                        .send()
                        .await
                        .expect("relay answers");
                    assert_eq!(response.status().as_u16(), 200);
                    latencies.push(t.elapsed());
                }
                latencies
            }));
        }
        let mut latencies = Vec::new();
        for task in tasks {
            latencies.extend(task.await.expect("worker finished"));
        }
        let elapsed = started.elapsed();
        latencies.sort();
        println!(
            "{:>9} broker, {total} signed requests, concurrency {concurrency:>2}: {:>6.0} req/s, p50 {:>6.2} ms, p99 {:>6.2} ms, max {:>6.2} ms",
            broker.name,
            total as f64 / elapsed.as_secs_f64(),
            percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
            percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        );
    }
    if let Some(kib) = peak_rss_kib(child.0.id()) {
        println!(
            "{:>9} broker: relay peak resident memory {:.1} MiB",
            broker.name,
            kib as f64 / 1024.0
        );
    }
}

fn main() {
    bench_decision();
    let binary = std::env::var("RELAY_FN_BIN").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../target/release/relay-fn").to_owned()
    });
    if !std::path::Path::new(&binary).exists() {
        println!(
            "skipping the HTTP benchmark: build the release binary first (cargo build --release -p relay-fn)"
        );
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        for broker in testkit::brokers() {
            bench_binary(&broker, &binary).await;
        }
    });
}
