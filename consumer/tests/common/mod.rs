//! Test support for the pipeline tests: fake Slack/Teams/webhook receivers on 127.0.0.1, Butler
//! config files written for a test broker, sample events made unique, an MQTT publisher, and
//! the consumer run in-process or as the real binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use bytes::Bytes;
use consumer::pipeline::{RunEvent, RunOptions};
use consumer::transforms::Handled;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

pub const TENANT: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
pub const OTHER_TENANT: &str = "OtherTenant000000000000000000001";
pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- receivers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer 200 and record the request.
    Ok = 0,
    /// Answer 503 (a destination that is down).
    Fail = 1,
    /// Record the request as hung and never answer.
    Hang = 2,
    /// Answer `429 Too Many Requests` with `Retry-After: 1` once (recorded as throttled), then
    /// behave as [`Mode::Ok`].
    ThrottleOnce = 3,
}

#[derive(Debug, Clone)]
pub struct Request {
    pub path: String,
    pub body: Value,
    pub idempotency_key: Option<String>,
}

struct Shared {
    mode: AtomicU8,
    delivered: mpsc::UnboundedSender<Request>,
    hung: mpsc::UnboundedSender<Request>,
    failed: mpsc::UnboundedSender<Request>,
    /// Every request received, whatever the answer.
    requests: AtomicUsize,
    /// Requests answered `429` by [`Mode::ThrottleOnce`].
    throttled: AtomicUsize,
    /// Milliseconds [`Mode::Ok`] waits before answering.
    delay_ms: AtomicU64,
    /// Event ids [`Mode::Ok`] refuses for good (`400`), recorded as failed.
    refused: std::sync::Mutex<Vec<String>>,
}

/// A fake incoming-webhook endpoint (Slack, Teams or a generic webhook).
pub struct Receiver {
    pub addr: std::net::SocketAddr,
    shared: Arc<Shared>,
    delivered: mpsc::UnboundedReceiver<Request>,
    hung: mpsc::UnboundedReceiver<Request>,
    failed: mpsc::UnboundedReceiver<Request>,
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let request = Request {
        path: uri.path().to_owned(),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    shared.requests.fetch_add(1, Ordering::SeqCst);
    let throttle = shared
        .mode
        .compare_exchange(
            Mode::ThrottleOnce as u8,
            Mode::Ok as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        )
        .is_ok();
    if throttle {
        shared.throttled.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response();
    }
    match shared.mode.load(Ordering::SeqCst) {
        0 if shared
            .refused
            .lock()
            .is_ok_and(|r| r.iter().any(|id| request.body["eventId"] == id.as_str())) =>
        {
            let _ = shared.failed.send(request);
            StatusCode::BAD_REQUEST.into_response()
        }
        0 => {
            let delay = shared.delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let _ = shared.delivered.send(request);
            StatusCode::OK.into_response()
        }
        1 => {
            let _ = shared.failed.send(request);
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
        _ => {
            let _ = shared.hung.send(request);
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

impl Receiver {
    pub async fn start() -> Receiver {
        let (delivered_tx, delivered) = mpsc::unbounded_channel();
        let (hung_tx, hung) = mpsc::unbounded_channel();
        let (failed_tx, failed) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            mode: AtomicU8::new(Mode::Ok as u8),
            delivered: delivered_tx,
            hung: hung_tx,
            failed: failed_tx,
            requests: AtomicUsize::new(0),
            throttled: AtomicUsize::new(0),
            delay_ms: AtomicU64::new(0),
            refused: std::sync::Mutex::new(Vec::new()),
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(Arc::clone(&shared));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            addr,
            shared,
            delivered,
            hung,
            failed,
        }
    }

    /// URL with a token-like path, as real incoming webhooks have.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.shared.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// [`Mode::Ok`] answers `400` (refused for good) to the alerts of this event.
    pub fn refuse(&self, event_id: &str) {
        if let Ok(mut refused) = self.shared.refused.lock() {
            refused.push(event_id.to_owned());
        }
    }

    /// [`Mode::Ok`] answers only after `delay` (a slow destination).
    pub fn set_delay(&self, delay: Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.shared.delay_ms.store(millis, Ordering::SeqCst);
    }

    /// The next request answered with 200.
    pub async fn delivered(&mut self) -> Request {
        tokio::time::timeout(WAIT, self.delivered.recv())
            .await
            .ok()
            .flatten()
            .expect("a delivered request")
    }

    pub async fn hung(&mut self) -> Request {
        tokio::time::timeout(WAIT, self.hung.recv())
            .await
            .ok()
            .flatten()
            .expect("a request that hangs")
    }

    pub async fn failed(&mut self) -> Request {
        tokio::time::timeout(WAIT, self.failed.recv())
            .await
            .ok()
            .flatten()
            .expect("a refused request")
    }

    /// Everything delivered so far, without waiting.
    pub fn drain_delivered(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Ok(r) = self.delivered.try_recv() {
            out.push(r);
        }
        out
    }

    /// Every request received so far, whatever the answer (hung ones included).
    pub fn requests(&self) -> usize {
        self.shared.requests.load(Ordering::SeqCst)
    }

    /// Requests answered `429` + `Retry-After` by [`Mode::ThrottleOnce`].
    pub fn throttled(&self) -> usize {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// Every request refused so far (answered 503), without waiting.
    pub fn drain_failed(&mut self) -> Vec<Request> {
        let mut out = Vec::new();
        while let Ok(r) = self.failed.try_recv() {
            out.push(r);
        }
        out
    }
}

// ---------------------------------------------------------------- configuration

/// Which destinations a test configures.
#[derive(Debug, Default, Clone)]
pub struct Destinations {
    pub slack: Option<String>,
    pub slack_formatted: bool,
    pub teams: Option<String>,
    pub teams_formatted: bool,
    pub webhook: Option<String>,
    pub mqtt_topic: Option<String>,
    pub script_log: bool,
    /// Tenant API base URL; `None` switches enrichment off.
    pub tenant_url: Option<String>,
    /// The tenant JWT (default: a well-formed dummy).
    pub jwt: Option<String>,
    /// Butler's `alertEnableByTag` for Slack / Teams.
    pub slack_tag: Option<String>,
    pub teams_tag: Option<String>,
    pub max_attempts: u32,
    /// MQTT 5 (session expiry instead of clean session off).
    pub v5: bool,
    /// MQTT 5 shared subscription group.
    pub shared_group: Option<String>,
    /// Topic root to share with another setup (default: a fresh one).
    pub topic_root: Option<String>,
    /// Butler's `rateLimit` seconds for Slack and Teams (default 0: none).
    pub chat_rate_limit: u64,
    /// Butler's `basicContentOnly` for Slack and Teams.
    pub basic_content_only: bool,
    /// `consumer.shutdownGraceSeconds` (default: the consumer's).
    pub shutdown_grace: Option<u64>,
    /// `consumer.concurrency` (default: the consumer's).
    pub concurrency: Option<u64>,
    /// `consumer.redelivery.scheduleSeconds` (default: the consumer's).
    pub redelivery_schedule: Option<Vec<u64>>,
    /// `consumer.redelivery.holdSeconds` (default: the consumer's).
    pub hold_seconds: Option<u64>,
    /// The webhook destination's `timeoutSeconds` (default: the consumer's).
    pub webhook_timeout: Option<u64>,
    /// `consumer.deadLetterDirectory` to share with another setup (default: one of its own).
    pub dead_letter_dir: Option<PathBuf>,
    /// `consumer.digest`: `(afterAlerts, windowSeconds)`. `None`: `enable: false`, so the
    /// tests written for one message per alert see exactly that.
    pub digest: Option<(u32, u64)>,
    /// `consumer.stateStore` (a `redis://` URL); default: files in the state directory.
    pub state_store: Option<String>,
    /// `consumer.watchdog`: `(relayUrl, intervalSeconds, reenable)`.
    pub watchdog: Option<(String, u64, bool)>,
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub butler: PathBuf,
    pub extensions: PathBuf,
    pub state_dir: PathBuf,
    pub dead_letter_dir: PathBuf,
    pub script_log_dir: PathBuf,
    /// Events are published here; the consumer subscribes to `<root>/#`.
    pub topic: String,
    pub client_id: String,
}

pub fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Writes a Butler file (Butler's keys only) and an extension file for `broker`.
/// One webhook destination at `url` and no retry: the set-up most end-to-end tests need.
pub fn webhook_only(broker: &testkit::TestBroker, url: &str) -> Setup {
    write_config(
        broker,
        &Destinations {
            webhook: Some(url.to_owned()),
            max_attempts: 1,
            ..Default::default()
        },
    )
}

pub fn write_config(broker: &testkit::TestBroker, d: &Destinations) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = d
        .topic_root
        .clone()
        .unwrap_or_else(|| testkit::unique("qscloud-test"));
    let client_id = testkit::unique("consumer");
    let state_dir = dir.path().join("state");
    let dead_letter_dir = d
        .dead_letter_dir
        .clone()
        .unwrap_or_else(|| dir.path().join("dead-letter"));
    let script_log_dir = dir.path().join("scriptlog");
    let templates = templates_dir();
    let tenant_url = d
        .tenant_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    let jwt = d.jwt.clone().unwrap_or_else(|| {
        "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ0ZXN0In0.dGVzdC1zaWduYXR1cmU".to_owned()
    });
    let chat = |kind: &str,
                url: &Option<String>,
                formatted: bool,
                file: &str,
                tag: &Option<String>| {
        match url {
        None => format!("                        {kind}:\n                            reloadAppFailure:\n                                enable: false\n"),
        Some(url) => format!(
            "                        {kind}:
                            reloadAppFailure:
                                enable: true
                                alertEnableByTag:
                                    enable: {}
                                    tag: {}
                                basicContentOnly: {}
                                webhookURL: {url}
                                channel: sense-failures
                                fromUser: Qlik Sense
                                iconEmoji: ':ghost:'
                                messageType: {}
                                basicMsgTemplate: 'Qlik Cloud app reload failed: \"{{{{appName}}}}\"'
                                rateLimit: {}
                                headScriptLogLines: 5
                                tailScriptLogLines: 3
                                templateFile: {}
",
            tag.is_some(),
            tag.clone().unwrap_or_else(|| "Butler - alert".into()),
            d.basic_content_only,
            if formatted { "formatted" } else { "basic" },
            d.chat_rate_limit,
            templates.join(file).display()
        ),
    }
    };
    let butler = format!(
        "Butler:
    logLevel: info
    scriptLog:
        storeOnDisk:
            qsCloud:
                appReloadFailure:
                    enable: {}
                    logDirectory: {}
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
                    id: {TENANT}
                    tenantUrl: {tenant_url}
                    authType: jwt
                    auth:
                        jwt:
                            token: {jwt}
                    qlikSenseUrls:
                        qmc: https://acme.eu.qlikcloud.com/console
                        hub: https://acme.eu.qlikcloud.com/hub
                    comment: Test tenant
                    alert:
{}{}",
        d.script_log,
        script_log_dir.display(),
        broker.host,
        if d.v5 { broker.v5_port } else { broker.port },
        chat(
            "teamsNotification",
            &d.teams,
            d.teams_formatted,
            "teams-failed-reload-qscloud.handlebars",
            &d.teams_tag
        ),
        chat(
            "slackNotification",
            &d.slack,
            d.slack_formatted,
            "slack-failed-reload-qscloud.handlebars",
            &d.slack_tag
        ),
    );
    let webhook = d
        .webhook
        .as_ref()
        .map(|url| {
            format!(
                "                webhook:
                    - name: ops
                      url: {url}
                      headers:
                          - name: Authorization
                            value: Bearer webhook-header-secret
{}",
                d.webhook_timeout
                    .map(|s| format!("                      timeoutSeconds: {s}\n"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mqtt = d
        .mqtt_topic
        .as_ref()
        .map(|topic| format!("                mqtt:\n                    enable: true\n                    topic: {topic}\n"))
        .unwrap_or_default();
    let v5 = match (d.v5, &d.shared_group) {
        (false, _) => String::new(),
        (true, None) => "                        mqttVersion: '5'\n                        sessionExpirySeconds: 3600\n".to_owned(),
        (true, Some(group)) => format!("                        mqttVersion: '5'\n                        sessionExpirySeconds: 3600\n                        sharedSubscriptionGroup: {group}\n"),
    };
    let extensions = format!(
        "Butler:
    mqttConfig:
        qlikSenseCloud:
            event:
                mqttForward:
                    broker:
                        tls: false
                        clientId: {client_id}
                        cleanSession: false
{v5}    qlikSenseCloud:
        consumer:
            stateDirectory: {}
            deadLetterDirectory: {}
{}{}            retry:
                maxAttempts: {}
                initialBackoffMs: 20
                maxBackoffMs: 100
            enrichment:
                enable: {}
                timeoutSeconds: 5
                maxRetries: 1
                initialBackoffMs: 10
            destinations:
                log:
                    enable: true
{webhook}{mqtt}",
        state_dir.display(),
        dead_letter_dir.display(),
        d.shutdown_grace
            .map(|s| format!("            shutdownGraceSeconds: {s}\n"))
            .unwrap_or_default(),
        engine_keys(d),
        d.max_attempts.max(1),
        d.tenant_url.is_some(),
    );
    let butler_path = dir.path().join("butler.yaml");
    let extensions_path = dir.path().join("consumer-extensions.yaml");
    std::fs::write(&butler_path, butler).expect("write Butler config");
    std::fs::write(&extensions_path, extensions).expect("write extension config");
    Setup {
        butler: butler_path,
        extensions: extensions_path,
        state_dir,
        dead_letter_dir,
        script_log_dir,
        topic: format!("{root}/app/reload/{TENANT}"),
        client_id,
        dir,
    }
}

/// `concurrency` and `redelivery`, when a test sets them.
fn engine_keys(d: &Destinations) -> String {
    let mut out = String::new();
    match d.digest {
        None => out.push_str("            digest:\n                enable: false\n"),
        Some((after, window)) => out.push_str(&format!(
            "            digest:\n                afterAlerts: {after}\n                windowSeconds: {window}\n"
        )),
    }
    if let Some(url) = &d.state_store {
        out.push_str(&format!("            stateStore: {url}\n"));
    }
    if let Some((relay, interval, reenable)) = &d.watchdog {
        out.push_str(&format!(
            "            watchdog:\n                relayUrl: {relay}\n                intervalSeconds: {interval}\n                reenable: {reenable}\n"
        ));
    }
    if let Some(n) = d.concurrency {
        out.push_str(&format!("            concurrency: {n}\n"));
    }
    if d.redelivery_schedule.is_some() || d.hold_seconds.is_some() {
        out.push_str("            redelivery:\n");
        if let Some(schedule) = &d.redelivery_schedule {
            let steps: Vec<String> = schedule.iter().map(u64::to_string).collect();
            out.push_str(&format!(
                "                scheduleSeconds: [{}]\n",
                steps.join(", ")
            ));
        }
        if let Some(hold) = d.hold_seconds {
            out.push_str(&format!("                holdSeconds: {hold}\n"));
        }
    }
    out
}

impl Setup {
    pub fn config(&self) -> consumer::config::ConsumerConfig {
        consumer::config::load(&self.butler, Some(&self.extensions))
            .unwrap_or_else(|e| panic!("test configuration is valid: {e}"))
    }

    pub fn parked_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(&self.dead_letter_dir) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect();
                files.sort();
                files
            }
            Err(_) => vec![],
        }
    }
}

// ---------------------------------------------------------------- events

/// The sample envelopes, named by what the tests call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Legacy,
    Hybrid,
    CloudEventsAppReload,
    CloudEventsReloadFinished,
}

pub const ALL_SAMPLES: [Sample; 4] = [
    Sample::Legacy,
    Sample::Hybrid,
    Sample::CloudEventsAppReload,
    Sample::CloudEventsReloadFinished,
];

fn set(obj: &mut Value, path: &[&str], value: &str) {
    let mut node = obj;
    for key in &path[..path.len() - 1] {
        match node.get_mut(*key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut()
        && map.contains_key(path[path.len() - 1])
    {
        map.insert(
            path[path.len() - 1].to_owned(),
            Value::String(value.to_owned()),
        );
    }
}

/// The reload id [`event`] gives an event: its own, so that events of one test are different
/// reloads (the consumer alerts once per reload).
pub fn reload_of(event_id: &str) -> String {
    format!("reload-{event_id}")
}

/// A sample body with its event id, tenant and app replaced (only the fields the format has),
/// about reload [`reload_of`]`(event_id)`.
pub fn event(sample: Sample, event_id: &str, tenant: &str, app_id: &str) -> Vec<u8> {
    event_with_reload(sample, event_id, tenant, app_id, &reload_of(event_id))
}

/// A sample body about a given reload (the fake tenant knows the samples' own reload ids).
pub fn event_with_reload(
    sample: Sample,
    event_id: &str,
    tenant: &str,
    app_id: &str,
    reload_id: &str,
) -> Vec<u8> {
    let body = match sample {
        Sample::Legacy => testkit::sample("app-reload-failed.legacy.json"),
        Sample::Hybrid => testkit::hybrid_sample(),
        Sample::CloudEventsAppReload => testkit::sample("app-reload-failed.cloudevents.json"),
        Sample::CloudEventsReloadFinished => {
            testkit::sample("reload-finished-failed.cloudevents.json")
        }
    };
    let mut v: Value = serde_json::from_slice(&body).expect("sample is JSON");
    set(&mut v, &["id"], event_id);
    set(&mut v, &["eventId"], event_id);
    set(&mut v, &["tenantid"], tenant);
    set(&mut v, &["extensions", "tenantId"], tenant);
    set(&mut v, &["toplevelresourceid"], app_id);
    set(&mut v, &["extensions", "topLevelResourceId"], app_id);
    set(&mut v, &["data", "appId"], app_id);
    set(&mut v, &["data", "reloadId"], reload_id);
    if sample == Sample::CloudEventsReloadFinished {
        set(&mut v, &["data", "id"], reload_id);
    }
    serde_json::to_vec(&v).expect("serializes")
}

/// A reload that succeeded (no alert expected).
pub fn succeeded_event(event_id: &str, app_id: &str) -> Vec<u8> {
    let body = event(Sample::CloudEventsAppReload, event_id, TENANT, app_id);
    let text = String::from_utf8(body).expect("utf8");
    text.replace("\"status\":\"error\"", "\"status\":\"ok\"")
        .into_bytes()
}

/// Publishes with QoS 1 and returns once the broker acknowledged it.
pub async fn publish(broker: &testkit::TestBroker, topic: &str, payload: Vec<u8>) {
    let mut options = MqttOptions::new(testkit::unique("test-pub"), &broker.host, broker.port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish queued");
    let acked = async {
        let mut ours = None;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ours = Some(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == ours => return,
                Ok(_) => {}
                Err(e) => panic!("publishing to {}: {e}", broker.name),
            }
        }
    };
    tokio::time::timeout(WAIT, acked)
        .await
        .unwrap_or_else(|_| panic!("no PUBACK from {}", broker.name));
    let _ = client.disconnect().await;
}

// ---------------------------------------------------------------- consumer in-process

pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), consumer::pipeline::RunError>>,
    events: mpsc::UnboundedReceiver<RunEvent>,
    /// Messages handled before the subscription was confirmed (a resumed session delivers
    /// what it kept before the SUBACK of the re-subscription arrives).
    early: std::collections::VecDeque<RunEvent>,
}

/// Starts the pipeline in this process and returns once it is subscribed.
pub async fn start(setup: &Setup) -> Running {
    let config = setup.config();
    let (tx, events) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        observer: Some(tx),
        source: None,
    };
    let task = tokio::spawn(consumer::pipeline::run(
        config,
        async move {
            let _ = stopped.await;
        },
        options,
    ));
    let mut running = Running {
        stop: Some(stop),
        task,
        events,
        early: Default::default(),
    };
    loop {
        match running.next_event().await {
            RunEvent::Subscribed => return running,
            other => running.early.push_back(other),
        }
    }
}

impl Running {
    async fn next_event(&mut self) -> RunEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .ok()
            .flatten()
            .expect("the consumer reports an event")
    }

    /// The next handled message (a message parked raw instead fails the test).
    pub async fn handled(&mut self) -> Handled {
        match self.next().await {
            RunEvent::Handled(h) => h,
            other => panic!("expected a handled message, got {other:?}"),
        }
    }

    /// The next message handled or parked raw.
    pub async fn next(&mut self) -> RunEvent {
        if let Some(event) = self.early.pop_front() {
            return event;
        }
        loop {
            match self.next_event().await {
                RunEvent::Subscribed => continue,
                other => return other,
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("consumer stops");
        result.expect("task").expect("consumer ran without error");
    }
}

/// Publishes every payload on one connection, in order, and returns once all are acknowledged.
pub async fn burst(broker: &testkit::TestBroker, topic: &str, payloads: Vec<Vec<u8>>) {
    let mut options = MqttOptions::new(testkit::unique("burst"), &broker.host, broker.port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_inflight(1);
    let (client, mut eventloop) = AsyncClient::new(options, payloads.len() + 10);
    let count = payloads.len();
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queued");
    }
    let mut acked = 0;
    let all = async {
        while acked < count {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("burst publisher on {}: {e}", broker.name),
            }
        }
    };
    tokio::time::timeout(WAIT, all)
        .await
        .unwrap_or_else(|_| panic!("{}: every event acknowledged by the broker", broker.name));
    let _ = client.disconnect().await;
}

/// Waits (bounded by [`WAIT`]) until the dead-letter directory is empty. A held alert (a digest
/// part is held from the start) leaves it once its delivery is confirmed, a moment after the
/// destination has it: stopping the consumer in between would leave it for the next start.
pub async fn until_nothing_parked(setup: &Setup) {
    let end = std::time::Instant::now() + WAIT;
    while !setup.parked_files().is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "still parked or held: {:?}",
            setup.parked_files()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------- the real binary

/// The real binary, run by [`spawn_binary`]; its log is its stderr.
pub type Binary = testkit::process::Process;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_consumer")
}

/// Runs `consumer run` and returns once its log says it is subscribed.
pub async fn spawn_binary(setup: &Setup) -> Binary {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg("run")
        .arg("--config")
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    let mut binary = Binary::spawn(command);
    binary.wait_for_line("subscribed with QoS 1").await;
    binary
}

/// Waits until the log says what became of event `id`: alerted, or dropped as already
/// alerted on (here or by another consumer).
pub async fn wait_for_decision(consumer: &mut Binary, id: &str) {
    let alerted = format!("event {id:?}");
    let dropped = format!("event_id={id}");
    consumer
        .wait_until(&format!("decision on event {id}"), |l| {
            l.contains(&alerted) && l.contains("reload failed, alerting")
                || l.contains(&dropped) && l.contains("already alerted on")
        })
        .await;
}

/// Runs a consumer subcommand to completion; returns (exit code, stdout, stderr).
pub async fn run_command(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("consumer binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read file")).expect("JSON file")
}

// ---------------------------------------------------------------- Redis and ports

/// Whether a Redis answers PING on 127.0.0.1:`port`.
pub fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// True (with a message) when no Redis answers on 127.0.0.1:6379: the test is skipped.
pub fn skip_without_redis() -> bool {
    if redis_answers(6379) {
        return false;
    }
    eprintln!("SKIPPED: no Redis on 127.0.0.1:6379 (CI starts one: redis-server)");
    true
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
