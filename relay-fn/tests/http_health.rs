//! The relay binary in HTTP mode as an operator sees it: `/healthz` follows the broker
//! connection (down → 503, back → 200), `/metrics` counts what happened, `METRICS_LISTEN_ADDR`
//! moves both off the webhook listener, and the command line answers `--help` and `--version`.
//!
//! The broker is the embedded one behind a [`TcpProxy`], which can stop listening and come
//! back on the same port as a broker that goes down and returns would.

mod common;

use std::net::SocketAddr;

use common::{HttpResponse, Process, WAIT, http_request};
use testkit::proxy::TcpProxy;

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The relay on a free port, its broker connection through `broker`, with `env` on top.
async fn start(broker: SocketAddr, env: &[(&'static str, String)]) -> (Process, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let mut all = vec![
        ("WEBHOOK_SECRET", testkit::TEST_SECRET.to_owned()),
        ("MQTT_URL", format!("mqtt://{broker}")),
        ("MQTT_TOPIC_ROOT", testkit::unique("relay-health")),
        ("MAX_EVENT_AGE_SECS", "0".to_owned()),
        ("LISTEN_ADDR", addr.to_string()),
    ];
    all.extend(env.iter().cloned());
    let mut relay = common::relay(&all);
    relay.wait_for_port(addr, &[]).await;
    (relay, addr)
}

async fn embedded_behind_proxy() -> TcpProxy {
    let broker = testkit::embedded();
    let upstream: SocketAddr = format!("{}:{}", broker.host, broker.port)
        .parse()
        .expect("embedded broker address");
    TcpProxy::start(upstream).await
}

async fn post(addr: SocketAddr, body: &[u8], signature: &str) -> HttpResponse {
    http_request(
        addr,
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("Qlik-Signature", signature),
        ],
        body,
    )
    .await
}

fn text(response: &HttpResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// The value of the sample `name` (with its labels, as exposed) in Prometheus text.
fn sample(exposition: &str, name: &str) -> Option<f64> {
    exposition.lines().find_map(|line| {
        let (key, value) = line.rsplit_once(' ')?;
        (key == name).then(|| value.parse().ok()).flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_follows_the_broker_down_and_back() {
    let mut proxy = embedded_behind_proxy().await;
    let (mut relay, addr) = start(proxy.addr, &[]).await;
    let up = common::await_health(addr, 200).await;
    assert_eq!(text(&up), "ok");

    proxy.stop().await;
    let down = common::await_health(addr, 503).await;
    assert_eq!(text(&down), "mqtt: broker unreachable");
    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let refused = post(addr, &body, &testkit::signature(&body)).await;
    assert_eq!(refused.status, 503, "{}", text(&refused));
    relay.wait_for_line("broker unreachable").await;

    proxy.resume().await;
    let back = common::await_health(addr, 200).await;
    assert_eq!(text(&back), "ok");
    let accepted = post(addr, &body, &testkit::signature(&body)).await;
    assert_eq!(accepted.status, 200, "{}", text(&accepted));
    let metrics = http_request(addr, "GET", "/metrics", &[], b"").await;
    let metrics = text(&metrics);
    assert_eq!(
        sample(&metrics, "qscloud_relay_broker_unavailable_total"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "qscloud_relay_broker_connected"),
        Some(1.0),
        "{metrics}"
    );

    let log = relay.terminate().await.log;
    let first = log.lines().next().unwrap_or_default();
    assert!(
        first.contains(&format!("relay-fn {VERSION} starting")) && first.contains("http"),
        "the first log line names the version and the mode: {first}"
    );
    assert!(
        first.contains(&addr.to_string()),
        "and the listen address: {first}"
    );
    assert_eq!(
        log.matches("broker unreachable").count(),
        1,
        "the outage is logged once, not at every reconnect attempt:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_relayed_and_rejected_requests() {
    let proxy = embedded_behind_proxy().await;
    let (_relay, addr) = start(proxy.addr, &[]).await;
    common::await_health(addr, 200).await;
    let before = text(&http_request(addr, "GET", "/metrics", &[], b"").await);
    let rejected = "qscloud_relay_requests_rejected_total{reason=\"bad_signature\"}";
    assert_eq!(sample(&before, rejected), Some(0.0), "{before}");
    assert_eq!(
        sample(&before, "qscloud_relay_events_relayed_total"),
        Some(0.0)
    );

    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let ok = post(addr, &body, &testkit::signature(&body)).await;
    assert_eq!(ok.status, 200, "{}", text(&ok));
    let bad = post(addr, &body, &"0".repeat(64)).await;
    assert_eq!(bad.status, 401);

    let response = http_request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("application/openmetrics-text")),
        "{:?}",
        response.headers
    );
    let metrics = text(&response);
    for (name, value) in [
        ("qscloud_relay_events_relayed_total", 1.0),
        (rejected, 1.0),
        (
            "qscloud_relay_requests_rejected_total{reason=\"not_an_event\"}",
            0.0,
        ),
        ("qscloud_relay_broker_unavailable_total", 0.0),
        ("qscloud_relay_broker_connected", 1.0),
        ("qscloud_relay_publish_latency_seconds_count", 1.0),
        (
            "qscloud_relay_publish_latency_seconds_bucket{le=\"+Inf\"}",
            1.0,
        ),
    ] {
        assert_eq!(sample(&metrics, name), Some(value), "{name}\n{metrics}");
    }
    let latency =
        sample(&metrics, "qscloud_relay_publish_latency_seconds_sum").expect("a latency sum");
    assert!(latency > 0.0 && latency < 10.0, "{latency}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_listen_addr_moves_healthz_and_metrics_off_the_webhook_listener() {
    let proxy = embedded_behind_proxy().await;
    let operations: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let (mut relay, addr) = start(
        proxy.addr,
        &[("METRICS_LISTEN_ADDR", operations.to_string())],
    )
    .await;
    relay.wait_for_port(operations, &[]).await;
    common::await_health(operations, 200).await;
    let metrics = http_request(operations, "GET", "/metrics", &[], b"").await;
    assert_eq!(metrics.status, 200);
    assert!(text(&metrics).contains("qscloud_relay_broker_connected 1"));
    for path in ["/healthz", "/metrics"] {
        let public = http_request(addr, "GET", path, &[], b"").await;
        assert_eq!(public.status, 404, "{path} is not on the webhook listener");
    }
    let webhook = http_request(operations, "POST", "/", &[], b"{}").await;
    assert_eq!(webhook.status, 404, "no webhook on the operations listener");
    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let ok = post(addr, &body, &testkit::signature(&body)).await;
    assert_eq!(ok.status, 200, "{}", text(&ok));
}

/// Runs the binary with `args` and the full environment of an HTTP-mode start.
async fn run_cli(args: &[&str]) -> std::process::Output {
    let mut env = common::base_env();
    env.extend([
        ("WEBHOOK_SECRET".to_owned(), testkit::TEST_SECRET.to_owned()),
        ("MQTT_URL".to_owned(), testkit::embedded().url()),
        (
            "LISTEN_ADDR".to_owned(),
            format!("127.0.0.1:{}", common::free_port()),
        ),
    ]);
    let mut command = tokio::process::Command::new(common::relay_bin());
    command.args(args).env_clear().envs(env).kill_on_drop(true);
    tokio::time::timeout(WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("relay-fn {args:?} still runs after {WAIT:?}"))
        .expect("relay-fn runs")
}

#[tokio::test]
async fn version_answers_and_exits_even_with_the_environment_set() {
    let out = run_cli(&["--version"]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("relay-fn {VERSION}")
    );
}

#[tokio::test]
async fn an_unknown_argument_is_a_usage_error() {
    let out = run_cli(&["--listen", "0.0.0.0:80"]).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--listen") && stderr.contains("Usage"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_wrong_setting_exits_78_naming_its_variable() {
    // The run_cli environment with one setting wrong: a service manager must not restart it.
    let mut command = tokio::process::Command::new(common::relay_bin());
    let mut env = common::base_env();
    env.extend([
        ("WEBHOOK_SECRET".to_owned(), "tiny-secret-x".to_owned()),
        ("MQTT_URL".to_owned(), testkit::embedded().url()),
    ]);
    command.env_clear().envs(env).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("relay-fn stops")
        .expect("relay-fn runs");
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("WEBHOOK_SECRET"), "{stderr}");
    assert!(
        !stderr.contains("short"),
        "the value is not printed: {stderr}"
    );

    // A listen address that is taken is not a wrong setting (it may be free at the next start).
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut command = tokio::process::Command::new(common::relay_bin());
    let mut env = common::base_env();
    env.extend([
        ("WEBHOOK_SECRET".to_owned(), testkit::TEST_SECRET.to_owned()),
        ("MQTT_URL".to_owned(), testkit::embedded().url()),
        (
            "LISTEN_ADDR".to_owned(),
            taken.local_addr().expect("addr").to_string(),
        ),
    ]);
    command.env_clear().envs(env).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, command.output())
        .await
        .expect("relay-fn stops")
        .expect("relay-fn runs");
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every variable of docs/relay.md's configuration reference, as the table names them.
fn documented_variables() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/relay.md");
    let doc = std::fs::read_to_string(path).expect("docs/relay.md");
    let section = doc
        .split("## Configuration reference")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("a configuration reference section");
    let mut names = Vec::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        for name in first_cell.split('`').skip(1).step_by(2) {
            names.push(name.to_owned());
        }
    }
    assert!(names.len() > 20, "{names:?}");
    names
}

#[tokio::test]
async fn help_describes_the_program_and_lists_every_documented_variable() {
    let out = run_cli(&["--help"]).await;
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("Qlik-Signature") && help.contains("Usage: relay-fn"),
        "{help}"
    );
    for name in documented_variables() {
        assert!(
            help.lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "--help does not list {name}:\n{help}"
        );
    }
}
