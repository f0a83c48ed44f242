//! The real relay binary under a Lambda Runtime API emulator served on loopback: what
//! `sam local invoke` does, without Docker. Every `events/*.json` is fed through it.
//!
//! The binary is `RELAY_FN_BIN` when set (CI: `target/release/relay-fn`), else the debug build.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use common::{Expect, Process, WAIT};
use serde_json::Value;
use testkit::{Subscriber, TestBroker};
use tokio::sync::{Notify, mpsc, oneshot};

const RUNTIME: &str = "/2018-06-01/runtime";
const FUNCTION_ARN: &str = "arn:aws:lambda:eu-west-1:123456789012:function:qlik-cloud-relay";

/// What the runtime reported for one invocation.
#[derive(Debug)]
enum Outcome {
    /// `POST …/invocation/{id}/response`
    Response(Vec<u8>),
    /// `POST …/invocation/{id}/error`
    Error {
        error_type: Option<String>,
        body: Vec<u8>,
    },
}

struct Invocation {
    id: String,
    event: Vec<u8>,
    done: oneshot::Sender<Outcome>,
}

#[derive(Default)]
struct EmulatorState {
    queue: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<Invocation>>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    init_error: Mutex<Option<String>>,
    init_error_reported: Notify,
    next_calls: AtomicUsize,
    /// The most invocations handed out and not yet answered at one time.
    most_in_flight: AtomicUsize,
}

/// A Lambda Runtime API on 127.0.0.1 that hands out the invocations the test queues.
struct Emulator {
    addr: SocketAddr,
    state: Arc<EmulatorState>,
    queue: mpsc::UnboundedSender<Invocation>,
    counter: AtomicUsize,
}

impl Emulator {
    async fn start() -> Emulator {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(EmulatorState::default());
        *state.queue.lock().await = Some(rx);
        let app = Router::new()
            .route(&format!("{RUNTIME}/invocation/next"), get(next))
            .route(
                &format!("{RUNTIME}/invocation/{{id}}/response"),
                post(response),
            )
            .route(&format!("{RUNTIME}/invocation/{{id}}/error"), post(error))
            .route(&format!("{RUNTIME}/init/error"), post(init_error))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API emulator");
        let addr = listener.local_addr().expect("emulator address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("emulator serves");
        });
        Emulator {
            addr,
            state,
            queue: tx,
            counter: AtomicUsize::new(0),
        }
    }

    /// Starts the relay in Lambda mode against this emulator.
    fn spawn_relay(&self, env: &[(&str, String)]) -> Process {
        let mut all: Vec<(&str, String)> = vec![
            ("AWS_LAMBDA_RUNTIME_API", self.addr.to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME", "qlik-cloud-relay".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128".into()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/qlik-cloud-relay".into(),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                "2026/11/30/[$LATEST]0123456789abcdef0123456789abcdef".into(),
            ),
            ("AWS_REGION", "eu-west-1".into()),
            ("AWS_DEFAULT_REGION", "eu-west-1".into()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023".into()),
            ("LAMBDA_TASK_ROOT", "/var/task".into()),
            ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
            ("TZ", ":UTC".into()),
        ];
        all.extend(env.iter().cloned());
        common::relay(&all)
    }

    /// Queues `event` as an invocation without waiting for it.
    fn queue(&self, event: &[u8]) -> oneshot::Receiver<Outcome> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Invocation {
                id: format!("8476a536-e9f4-11e8-9739-{n:012x}"),
                event: event.to_vec(),
                done,
            })
            .expect("emulator queue open");
        outcome
    }

    /// Hands `event` to the runtime as the next invocation and waits (bounded) for its outcome.
    /// Fails with the relay's output if the process exits or reports an init error meanwhile.
    async fn invoke(&self, relay: &mut Process, event: &[u8]) -> Outcome {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("8476a536-e9f4-11e8-9739-{n:012x}");
        let (done, outcome) = oneshot::channel();
        self.queue
            .send(Invocation {
                id: id.clone(),
                event: event.to_vec(),
                done,
            })
            .expect("emulator queue open");
        if let Some(error) = self.state.init_error.lock().expect("lock").as_ref() {
            panic!(
                "relay reported an init error: {error}\n{}",
                relay.output_redacted(&[])
            );
        }
        tokio::select! {
            outcome = outcome => outcome.expect("emulator keeps the invocation"),
            status = relay.child.wait() => panic!(
                "relay exited ({status:?}) during invocation {id}\n{}",
                relay.output_redacted(&[])
            ),
            _ = self.state.init_error_reported.notified() => panic!(
                "relay reported an init error: {:?}\n{}",
                self.state.init_error.lock().expect("lock"),
                relay.output_redacted(&[])
            ),
            _ = tokio::time::sleep(WAIT) => panic!(
                "no outcome for invocation {id} within {WAIT:?}\n{}",
                relay.output_redacted(&[])
            ),
        }
    }
}

async fn next(State(state): State<Arc<EmulatorState>>) -> Response {
    state.next_calls.fetch_add(1, Ordering::Relaxed);
    let mut queue = state.queue.lock().await;
    let Some(rx) = queue.as_mut() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Some(invocation) = rx.recv().await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    drop(queue);
    {
        let mut pending = state.pending.lock().expect("lock");
        pending.insert(invocation.id.clone(), invocation.done);
        state
            .most_in_flight
            .fetch_max(pending.len(), Ordering::Relaxed);
    }
    let deadline_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis()
        + 15_000;
    let trace = format!(
        "Root=1-6b0bcf00-{:0>24};Parent=53995c3f42cd8ad8;Sampled=0",
        &invocation.id[invocation.id.len() - 12..]
    );
    (
        [
            ("content-type", "application/json".to_owned()),
            ("lambda-runtime-aws-request-id", invocation.id),
            ("lambda-runtime-deadline-ms", deadline_ms.to_string()),
            (
                "lambda-runtime-invoked-function-arn",
                FUNCTION_ARN.to_owned(),
            ),
            ("lambda-runtime-trace-id", trace),
        ],
        invocation.event,
    )
        .into_response()
}

fn finish(state: &EmulatorState, id: &str, outcome: Outcome) -> Response {
    match state.pending.lock().expect("lock").remove(id) {
        Some(done) => {
            let _ = done.send(outcome);
            (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
        }
        // The real API answers 400 InvalidRequestID (or a 4xx for a second answer).
        None => (
            StatusCode::BAD_REQUEST,
            r#"{"errorMessage":"Invalid request ID","errorType":"InvalidRequestID"}"#,
        )
            .into_response(),
    }
}

async fn response(
    State(state): State<Arc<EmulatorState>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    finish(&state, &id, Outcome::Response(body.to_vec()))
}

/// The `Lambda-Runtime-Function-Error-Type` the runtime reported, if any.
fn error_type(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
}

async fn error(
    State(state): State<Arc<EmulatorState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = error_type(&headers).map(str::to_owned);
    finish(
        &state,
        &id,
        Outcome::Error {
            error_type,
            body: body.to_vec(),
        },
    )
}

async fn init_error(
    State(state): State<Arc<EmulatorState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let error_type = error_type(&headers).unwrap_or("");
    *state.init_error.lock().expect("lock") =
        Some(format!("{error_type} {}", String::from_utf8_lossy(&body)));
    state.init_error_reported.notify_waiters();
    (StatusCode::ACCEPTED, r#"{"status":"OK"}"#).into_response()
}

/// An HTTP answer as lambda_http returns it for API Gateway / Function URL events.
#[derive(Debug)]
struct HttpAnswer {
    status: u16,
    body: Vec<u8>,
}

fn http_answer(outcome: &Outcome, file: &str) -> HttpAnswer {
    let Outcome::Response(raw) = outcome else {
        panic!(
            "{file}: the runtime reported an invocation error instead of an HTTP answer: {outcome:?}"
        );
    };
    let value: Value = serde_json::from_slice(raw).unwrap_or_else(|e| {
        panic!(
            "{file}: response is not JSON ({e}): {}",
            String::from_utf8_lossy(raw)
        )
    });
    let status = value["statusCode"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or_else(|| panic!("{file}: no statusCode in {value}"));
    let text = value["body"].as_str().unwrap_or_default();
    let body = if value["isBase64Encoded"] == Value::Bool(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .expect("base64 response body")
    } else {
        text.as_bytes().to_vec()
    };
    HttpAnswer { status, body }
}

fn relay_env(broker_url: String, root: &str) -> Vec<(&'static str, String)> {
    vec![
        ("WEBHOOK_SECRET", testkit::TEST_SECRET.to_owned()),
        ("MQTT_URL", broker_url),
        ("MQTT_TOPIC_ROOT", root.to_owned()),
        ("MQTT_CLIENT_ID", "relay-lambda-test".to_owned()),
        // The event files carry fixed 2026 times; their age is not what these tests check.
        ("MAX_EVENT_AGE_SECS", "0".to_owned()),
    ]
}

/// Feeds every event file to one relay and checks answer and broker side for each: published
/// byte for byte on the right topic for 200, nothing at all for the rejected ones.
async fn every_event_file_against(broker: &TestBroker) {
    let root = testkit::unique("relay-lambda");
    let mut subscriber = Subscriber::connect(broker, &format!("{root}/#")).await;
    let emulator = Emulator::start().await;
    let mut relay = emulator.spawn_relay(&relay_env(broker.url(), &root));
    let files = common::event_files();
    let sentinel = files
        .iter()
        .find(|f| f.expect == Expect::Published)
        .expect("at least one good event")
        .clone();
    // The sentinel goes last: whatever a rejected event might have published would arrive
    // before it, so "the next message is the one we expect" also proves nothing else arrived.
    for file in files.iter().chain(std::iter::once(&sentinel)) {
        let name = &file.name;
        let outcome = emulator.invoke(&mut relay, &file.raw).await;
        let answer = http_answer(&outcome, name);
        assert_eq!(
            answer.status,
            file.expect.status(),
            "{name} via {} broker: body {}\n{}",
            broker.name,
            String::from_utf8_lossy(&answer.body),
            relay.output_redacted(&[])
        );
        if file.expect != Expect::Published {
            continue;
        }
        let topic = common::expected_topic(&root, &file.body);
        let reply: Value = serde_json::from_slice(&answer.body)
            .unwrap_or_else(|e| panic!("{name}: 200 body is not JSON: {e}"));
        let envelope = qlik_events::Envelope::parse(&file.body).expect("envelope");
        assert_eq!(
            reply["topic"],
            Value::from(topic.clone()),
            "{name}: {reply}"
        );
        assert_eq!(
            reply["eventId"],
            Value::from(envelope.id),
            "{name}: {reply}"
        );
        let (got_topic, payload) = subscriber
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("{name}: nothing arrived on {root}/# after a 200"));
        assert_eq!(
            got_topic, topic,
            "{name}: arrived on the wrong topic (or a rejected event was published before it)"
        );
        assert!(
            payload == file.body,
            "{name}: payload differs from the webhook body ({} vs {} bytes)",
            payload.len(),
            file.body.len()
        );
    }
    assert!(
        relay.exited().is_none(),
        "relay exited\n{}",
        relay.output_redacted(&[])
    );
    assert!(emulator.state.init_error.lock().expect("lock").is_none());
    check_logs(&relay, &files, files.len() + 1);
}

/// Lambda logs: JSON lines by default (CloudWatch), one line per request carrying its status
/// and valid CloudWatch EMF metrics, and never the secret, a signature or a whole body.
fn check_logs(relay: &Process, files: &[common::EventFile], requests: usize) {
    let output = format!("{}\n{}", relay.stdout(), relay.stderr());
    let mut request_lines = 0;
    let mut metrics = HashMap::new();
    for line in output.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        if record.get("status").is_some() {
            request_lines += 1;
            testkit::emf::check(&record)
                .unwrap_or_else(|e| panic!("request line without valid EMF ({e}): {line}"));
            assert_eq!(record["FunctionName"], "qlik-cloud-relay", "{line}");
            for name in ["relayed", "rejected", "broker_unavailable"] {
                if record.get(name).is_some() {
                    *metrics.entry(name).or_insert(0) += 1;
                }
            }
        }
    }
    assert_eq!(
        request_lines, requests,
        "one log line per request:\n{output}"
    );
    let published = files
        .iter()
        .filter(|f| f.expect == Expect::Published)
        .count();
    assert_eq!(
        metrics.get("relayed"),
        Some(&(published + 1)),
        "one relayed metric per published event (and the sentinel)\n{output}"
    );
    assert_eq!(
        metrics.get("rejected"),
        Some(&(files.len() - published)),
        "{output}"
    );
    assert!(
        !output.contains(testkit::TEST_SECRET),
        "the secret is logged"
    );
    for file in files {
        if let Some(signature) = &file.signature {
            assert!(
                !output.contains(signature.as_str()),
                "{}: signature logged",
                file.name
            );
        }
        let body = String::from_utf8_lossy(&file.body);
        let body = body.trim();
        if !body.is_empty() {
            let escaped = serde_json::to_string(body).expect("string serializes");
            let escaped = escaped.trim_matches('"');
            assert!(
                !output.contains(body) && !output.contains(escaped),
                "{}: whole body logged",
                file.name
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_file_gets_its_answer_and_only_good_ones_are_published() {
    for broker in testkit::brokers() {
        every_event_file_against(&broker).await;
    }
}

/// Invocation payloads that are no HTTP event at all must not take the runtime down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_invocations_are_answered_and_the_runtime_keeps_serving() {
    let broker = testkit::embedded();
    let root = testkit::unique("relay-lambda-malformed");
    let mut subscriber = Subscriber::connect(&broker, &format!("{root}/#")).await;
    let emulator = Emulator::start().await;
    let mut relay = emulator.spawn_relay(&relay_env(broker.url(), &root));
    let good = common::first_event(Expect::Published);
    let malformed: [&[u8]; 5] = [
        b"{}",
        b"this is not JSON",
        b"[1,2,3]",
        br#"{"version":"2.0","requestContext":{}}"#,
        br#"{"httpMethod":"POST","body":12}"#,
    ];
    for event in malformed {
        let shown = String::from_utf8_lossy(event);
        match emulator.invoke(&mut relay, event).await {
            Outcome::Error { error_type, body } => {
                // The runtime's error document: {"errorType": ..., "errorMessage": ...}.
                let doc: Value = serde_json::from_slice(&body).unwrap_or_default();
                assert!(
                    doc.get("errorType").is_some(),
                    "{shown}: error body {}",
                    String::from_utf8_lossy(&body)
                );
                eprintln!("{shown}: invocation error {error_type:?} {doc}");
            }
            outcome @ Outcome::Response(_) => {
                let answer = http_answer(&outcome, &shown);
                assert!(
                    (400..500).contains(&answer.status),
                    "{shown}: answered {} {}",
                    answer.status,
                    String::from_utf8_lossy(&answer.body)
                );
            }
        }
        assert!(
            relay.exited().is_none(),
            "relay exited after {shown}\n{}",
            relay.output_redacted(&[])
        );
        // Still serving: a good event right after goes through, and is the only thing published.
        let answer = http_answer(&emulator.invoke(&mut relay, &good.raw).await, &good.name);
        assert_eq!(
            answer.status,
            200,
            "good event after {shown}: {}\n{}",
            String::from_utf8_lossy(&answer.body),
            relay.output_redacted(&[])
        );
        let (topic, payload) = subscriber.next(WAIT).await.expect("the good event arrives");
        assert_eq!(topic, common::expected_topic(&root, &good.body));
        assert!(payload == good.body, "payload is the body byte for byte");
    }
}

/// Broker unreachable: the relay must still start, answer 503 (Qlik records a failed delivery
/// that can be resent), and keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_answers_503() {
    let emulator = Emulator::start().await;
    let mut env = relay_env(
        format!("mqtt://127.0.0.1:{}", common::closed_port()),
        "relay-lambda-down",
    );
    env.push(("PUBLISH_TIMEOUT_MS", "1000".to_owned()));
    let mut relay = emulator.spawn_relay(&env);
    let good = common::first_event(Expect::Published);
    for attempt in 1..=2 {
        let answer = http_answer(&emulator.invoke(&mut relay, &good.raw).await, &good.name);
        assert_eq!(
            answer.status,
            503,
            "attempt {attempt}: {}\n{}",
            String::from_utf8_lossy(&answer.body),
            relay.output_redacted(&[])
        );
    }
    // Checks before publishing are unaffected by the broker.
    let bad = common::first_event(Expect::BadSignature);
    let answer = http_answer(&emulator.invoke(&mut relay, &bad.raw).await, &bad.name);
    assert_eq!(answer.status, 401);
    assert!(relay.exited().is_none());
}

/// A setting that cannot work stops the cold start with a message naming the variable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_setting_fails_the_cold_start_naming_the_variable() {
    let emulator = Emulator::start().await;
    let mut relay = emulator.spawn_relay(&[
        ("WEBHOOK_SECRET", "too-short".to_owned()),
        ("MQTT_URL", testkit::embedded().url()),
    ]);
    let status = relay.wait_exit(&["too-short"]).await;
    assert!(!status.success(), "exit status {status}");
    let stderr = relay.stderr();
    assert!(
        stderr.contains("WEBHOOK_SECRET"),
        "stderr names the variable:\n{}",
        relay.output_redacted(&["too-short"])
    );
    assert!(
        !relay.stdout().contains("too-short") && !stderr.contains("too-short"),
        "the secret value is never printed"
    );
    assert_eq!(
        emulator.state.next_calls.load(Ordering::Relaxed),
        0,
        "no invocation is fetched before the configuration is valid"
    );
    // The reason is reported to /runtime/init/error too, so the invoke error shows it.
    let reported = emulator
        .state
        .init_error
        .lock()
        .expect("lock")
        .clone()
        .expect("the relay reports its init error to the Runtime API");
    assert!(
        reported.starts_with("Runtime.ConfigError ") && reported.contains("WEBHOOK_SECRET"),
        "init error names its type and the variable: {reported}"
    );
    assert!(
        !reported.contains("too-short"),
        "the secret value is never reported"
    );
}

/// Lambda Managed Instances: with `AWS_LAMBDA_MAX_CONCURRENCY=4` one execution environment takes
/// four invocations at once. A broker that accepts TCP but never answers holds each publish for
/// its timeout, so the runtime only has four in hand at once if it handles them concurrently
/// (sequentially it would take one, answer 503 after the timeout, then take the next).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_instances_take_several_invocations_at_once() {
    let silent_broker = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a silent broker");
    let silent_addr = silent_broker.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent_broker.accept().await {
            held.push(socket);
        }
    });
    let emulator = Emulator::start().await;
    let mut env = relay_env(
        format!("mqtt://{silent_addr}"),
        "relay-lambda-concurrent-silent",
    );
    env.push(("PUBLISH_TIMEOUT_MS", "1500".to_owned()));
    env.push(("AWS_LAMBDA_MAX_CONCURRENCY", "4".to_owned()));
    let mut relay = emulator.spawn_relay(&env);
    let good = common::first_event(Expect::Published);
    let outcomes: Vec<_> = (0..4).map(|_| emulator.queue(&good.raw)).collect();
    for outcome in outcomes {
        let outcome = tokio::time::timeout(WAIT, outcome)
            .await
            .unwrap_or_else(|_| panic!("no answer in time\n{}", relay.output_redacted(&[])))
            .expect("emulator keeps the invocation");
        assert_eq!(http_answer(&outcome, &good.name).status, 503);
    }
    assert_eq!(
        emulator.state.most_in_flight.load(Ordering::Relaxed),
        4,
        "four invocations in hand at once\n{}",
        relay.output_redacted(&[])
    );
    assert!(relay.exited().is_none());

    // Against a live broker, concurrent invocations are each confirmed and published once.
    for broker in testkit::brokers() {
        let root = testkit::unique("relay-lambda-concurrent");
        let mut subscriber = Subscriber::connect(&broker, &format!("{root}/#")).await;
        let emulator = Emulator::start().await;
        let mut env = relay_env(broker.url(), &root);
        env.push(("AWS_LAMBDA_MAX_CONCURRENCY", "4".to_owned()));
        let relay = emulator.spawn_relay(&env);
        let outcomes: Vec<_> = (0..16).map(|_| emulator.queue(&good.raw)).collect();
        for outcome in outcomes {
            let outcome = tokio::time::timeout(WAIT, outcome)
                .await
                .unwrap_or_else(|_| panic!("no answer in time\n{}", relay.output_redacted(&[])))
                .expect("emulator keeps the invocation");
            assert_eq!(http_answer(&outcome, &good.name).status, 200);
        }
        for n in 0..16 {
            let (_, payload) = subscriber
                .next(WAIT)
                .await
                .unwrap_or_else(|| panic!("{}: message {n} of 16 did not arrive", broker.name));
            assert!(payload == good.body);
        }
        assert!(
            subscriber
                .next(std::time::Duration::from_millis(200))
                .await
                .is_none(),
            "more than 16 messages"
        );
    }
}
