//! The relay's real AWS SDK path to Secrets Manager, against a fake Secrets Manager served on
//! loopback (awsJson1.1, `X-Amz-Target: secretsmanager.GetSecretValue`) and, when `moto_server`
//! is installed, against a real moto server. The relay runs in HTTP mode.
//!
//! Every secret value here is a test value; the assertions still check that none is ever printed.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use common::{Process, WAIT};
use serde_json::{Value, json};

const SECRET_ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:relay-abc";
/// A second webhook secret, next to `testkit::TEST_SECRET`, as during a rotation.
const ROTATED_SECRET: &str = "relay-rotated-secret-from-secrets-manager-0002";
const MQTT_PASSWORD: &str = "mqtt-password-from-secrets-manager-0003";
const WRONG_SECRET: &str = "a-secret-the-relay-does-not-know-000000000004";

/// What the fake answers to GetSecretValue.
#[derive(Clone, Debug)]
enum Answer {
    Secret(String),
    Error { kind: &'static str, message: String },
}

#[derive(Clone, Debug)]
struct Call {
    target: Option<String>,
    secret_id: Option<String>,
    sigv4_signed: bool,
}

struct FakeSecretsManager {
    endpoint: String,
    calls: Arc<Mutex<Vec<Call>>>,
}

impl FakeSecretsManager {
    async fn start(answer: Answer) -> FakeSecretsManager {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/", post(get_secret_value))
            .with_state((answer, calls.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Secrets Manager");
        let addr = listener.local_addr().expect("fake address");
        tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake serves");
        });
        FakeSecretsManager {
            endpoint: format!("http://{addr}"),
            calls,
        }
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }

    /// Exactly one well-formed, signed GetSecretValue for [`SECRET_ARN`].
    fn assert_read_once(&self) {
        let calls = self.calls();
        assert_eq!(calls.len(), 1, "GetSecretValue calls per start: {calls:?}");
        let call = &calls[0];
        assert_eq!(
            call.target.as_deref(),
            Some("secretsmanager.GetSecretValue")
        );
        assert_eq!(call.secret_id.as_deref(), Some(SECRET_ARN));
        assert!(call.sigv4_signed, "the SDK signs the request (SigV4)");
    }
}

async fn get_secret_value(
    State((answer, calls)): State<(Answer, Arc<Mutex<Vec<Call>>>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or_default();
    let call = Call {
        target: header("x-amz-target"),
        secret_id: request["SecretId"].as_str().map(str::to_owned),
        sigv4_signed: header("authorization").is_some_and(|a| a.starts_with("AWS4-HMAC-SHA256")),
    };
    calls.lock().expect("lock").push(call.clone());
    let json_type = [("content-type", "application/x-amz-json-1.1")];
    if call.target.as_deref() != Some("secretsmanager.GetSecretValue") {
        let body =
            json!({"__type": "UnknownOperationException", "message": "unexpected operation"});
        return (StatusCode::BAD_REQUEST, json_type, body.to_string()).into_response();
    }
    match answer {
        Answer::Secret(value) => {
            let body = json!({
                "ARN": SECRET_ARN,
                "Name": "relay",
                "SecretString": value,
                "VersionId": "a1b2c3d4-5678-90ab-cdef-EXAMPLE11111",
                "VersionStages": ["AWSCURRENT"],
                "CreatedDate": 1_764_547_200.0,
            });
            (StatusCode::OK, json_type, body.to_string()).into_response()
        }
        Answer::Error { kind, message } => {
            let body = json!({"__type": kind, "message": message});
            (StatusCode::BAD_REQUEST, json_type, body.to_string()).into_response()
        }
    }
}

/// Every secret value a test may have put anywhere, for redaction and "never printed" checks.
const ALL_SECRETS: [&str; 3] = [ROTATED_SECRET, MQTT_PASSWORD, WRONG_SECRET];

fn relay_env(
    endpoint: &str,
    arn: &str,
    mqtt_url: String,
    root: &str,
) -> Vec<(&'static str, String)> {
    vec![
        // Never the default 8080: a relay that starts by mistake must not collide with anything.
        ("LISTEN_ADDR", format!("127.0.0.1:{}", common::free_port())),
        ("WEBHOOK_SECRET_ARN", arn.to_owned()),
        ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ("AWS_REGION", "us-east-1".to_owned()),
        ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
        ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ("MQTT_URL", mqtt_url),
        ("MQTT_TOPIC_ROOT", root.to_owned()),
        // The samples carry fixed 2026 times; their age is not what these tests check.
        ("MAX_EVENT_AGE_SECS", "0".to_owned()),
    ]
}

/// Starts the relay in HTTP mode on a free port and waits until it listens.
async fn start_http_relay(
    env: Vec<(&'static str, String)>,
    secrets: &[&str],
) -> (Process, SocketAddr) {
    let addr: SocketAddr = env
        .iter()
        .find(|(k, _)| *k == "LISTEN_ADDR")
        .and_then(|(_, v)| v.parse().ok())
        .expect("relay_env sets LISTEN_ADDR");
    let mut relay = common::relay(&env);
    relay.wait_for_port(addr, secrets).await;
    (relay, addr)
}

async fn post_webhook(addr: SocketAddr, body: &[u8], signature: &str) -> common::HttpResponse {
    common::http_request(
        addr,
        "POST",
        "/",
        &[
            ("Content-Type", "application/json"),
            ("User-Agent", "Qlik Webhook"),
            ("Qlik-Signature", signature),
        ],
        body,
    )
    .await
}

/// The process must have printed none of `secrets`, on either stream.
fn assert_nothing_printed(relay: &Process, secrets: &[&str]) {
    let output = format!("{}\n{}", relay.stdout(), relay.stderr());
    for (i, secret) in secrets.iter().enumerate() {
        assert!(
            !output.contains(secret),
            "secret #{i} was printed:\n{}",
            relay.output_redacted(secrets)
        );
    }
}

/// A relay reading `arn` from `endpoint` (MQTT to a broker, topics under `root`) must not
/// start: `assert_startup_fails` with `WEBHOOK_SECRET_ARN` and `kind`.
async fn assert_secret_stops_startup(endpoint: &str, arn: &str, root: &str, kind: &str) {
    let mut relay = common::relay(&relay_env(endpoint, arn, testkit::embedded().url(), root));
    assert_startup_fails(&mut relay, "WEBHOOK_SECRET_ARN", kind, &ALL_SECRETS).await;
}

/// The relay answered 200; otherwise its output is shown (secrets redacted).
#[track_caller]
fn assert_ok(response: &common::HttpResponse, relay: &Process) {
    assert_eq!(
        response.status,
        200,
        "{}",
        relay.output_redacted(&ALL_SECRETS)
    );
}

/// Start-up must fail: non-zero exit, stderr naming `variable` and `kind`, no secret printed.
async fn assert_startup_fails(relay: &mut Process, variable: &str, kind: &str, secrets: &[&str]) {
    let status = relay.wait_exit(secrets).await;
    let stderr = relay.stderr();
    assert!(
        !status.success(),
        "relay exited with {status}\n{}",
        relay.output_redacted(secrets)
    );
    assert!(
        stderr.contains(variable) && stderr.contains(kind),
        "stderr must name {variable} and {kind}:\n{}",
        relay.output_redacted(secrets)
    );
    assert_nothing_printed(relay, secrets);
    eprintln!("{kind}: {}", relay.output_redacted(secrets));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_secret_is_read_once_and_its_webhook_secrets_verify_requests() {
    let broker = testkit::embedded();
    let root = testkit::unique("relay-sm-json");
    let mut subscriber = testkit::Subscriber::connect(&broker, &format!("{root}/#")).await;
    let document = json!({
        "webhookSecret": format!("{ROTATED_SECRET},{}", testkit::TEST_SECRET),
        "mqttPassword": MQTT_PASSWORD,
    });
    let fake = FakeSecretsManager::start(Answer::Secret(document.to_string())).await;
    let mqtt_url = format!("mqtt://relay@{}:{}", broker.host, broker.port);
    let (relay, addr) = start_http_relay(
        relay_env(&fake.endpoint, SECRET_ARN, mqtt_url, &root),
        &ALL_SECRETS,
    )
    .await;

    let body = testkit::sample("app-reload-failed.cloudevents.json");
    // Either secret of the rotation list verifies.
    for secret in [testkit::TEST_SECRET, ROTATED_SECRET] {
        let response = post_webhook(addr, &body, &qlik_events::sign(secret, &body)).await;
        assert_eq!(
            response.status,
            200,
            "{}\n{}",
            String::from_utf8_lossy(&response.body),
            relay.output_redacted(&ALL_SECRETS)
        );
        let (topic, payload) = subscriber.next(WAIT).await.expect("the event arrives");
        assert_eq!(topic, common::expected_topic(&root, &body));
        assert!(payload == body, "payload is the body byte for byte");
    }
    // A signature made with a secret that is not in the document is refused, and not published.
    let response = post_webhook(addr, &body, &qlik_events::sign(WRONG_SECRET, &body)).await;
    assert_eq!(response.status, 401);
    let legacy = testkit::sample("app-reload-failed.legacy.json");
    let response = post_webhook(addr, &legacy, &testkit::signature(&legacy)).await;
    assert_eq!(response.status, 200);
    let (_, payload) = subscriber
        .next(WAIT)
        .await
        .expect("the legacy event arrives");
    assert!(
        payload == legacy,
        "the next message is the legacy event: the refused one was not published"
    );

    fake.assert_read_once();
    assert_nothing_printed(&relay, &ALL_SECRETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_secret_string_is_the_secret_list() {
    let broker = testkit::embedded();
    let root = testkit::unique("relay-sm-plain");
    let fake = FakeSecretsManager::start(Answer::Secret(format!(
        "{ROTATED_SECRET}, {}",
        testkit::TEST_SECRET
    )))
    .await;
    let (relay, addr) = start_http_relay(
        relay_env(&fake.endpoint, SECRET_ARN, broker.url(), &root),
        &ALL_SECRETS,
    )
    .await;
    let body = testkit::sample("reload-finished-failed.cloudevents.json");
    let response = post_webhook(addr, &body, &testkit::signature(&body)).await;
    assert_ok(&response, &relay);
    let reply = response.json();
    assert_eq!(
        reply["topic"],
        Value::from(common::expected_topic(&root, &body))
    );
    let response = post_webhook(addr, &body, &qlik_events::sign(WRONG_SECRET, &body)).await;
    assert_eq!(response.status, 401);
    fake.assert_read_once();
    assert_nothing_printed(&relay, &ALL_SECRETS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_secret_stops_startup_naming_the_variable_and_error_kind() {
    let fake = FakeSecretsManager::start(Answer::Error {
        kind: "ResourceNotFoundException",
        message: "Secrets Manager can't find the specified secret.".to_owned(),
    })
    .await;
    assert_secret_stops_startup(
        &fake.endpoint,
        SECRET_ARN,
        "relay-sm-missing",
        "ResourceNotFoundException",
    )
    .await;
    fake.assert_read_once();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denied_secret_stops_startup_naming_the_variable_and_error_kind() {
    let fake = FakeSecretsManager::start(Answer::Error {
        kind: "AccessDeniedException",
        message: format!(
            "User: arn:aws:sts::123456789012:assumed-role/relay-role/relay is not authorized to \
             perform: secretsmanager:GetSecretValue on resource: {SECRET_ARN} because no \
             identity-based policy allows the secretsmanager:GetSecretValue action"
        ),
    })
    .await;
    assert_secret_stops_startup(
        &fake.endpoint,
        SECRET_ARN,
        "relay-sm-denied",
        "AccessDeniedException",
    )
    .await;
    fake.assert_read_once();
}

/// Secrets Manager answers, but what it holds cannot work: start-up fails naming the variable,
/// and nothing of the value is printed (not even in a JSON parse error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_secret_value_stops_startup_without_printing_it() {
    const SHORT: &str = "short-secret-value-0005";
    let cases = [
        SHORT.to_owned(),
        json!({"webhookSecret": SHORT}).to_string(),
        json!({"webhookSecret": ROTATED_SECRET, "mqttPasword": MQTT_PASSWORD}).to_string(),
        json!({"mqttPassword": MQTT_PASSWORD}).to_string(),
        format!("{{\"webhookSecret\": \"{ROTATED_SECRET}\", \"mqttPassword\": \"{MQTT_PASSWORD}"),
        String::new(),
    ];
    let secrets = [ROTATED_SECRET, MQTT_PASSWORD, SHORT];
    for (i, value) in cases.into_iter().enumerate() {
        let fake = FakeSecretsManager::start(Answer::Secret(value)).await;
        let mut relay = common::relay(&relay_env(
            &fake.endpoint,
            SECRET_ARN,
            testkit::embedded().url(),
            "relay-sm-unusable",
        ));
        let status = relay.wait_exit(&secrets).await;
        assert!(
            !status.success(),
            "case {i}: relay started\n{}",
            relay.output_redacted(&secrets)
        );
        assert!(
            relay.stderr().contains("WEBHOOK_SECRET_ARN"),
            "case {i}: stderr names WEBHOOK_SECRET_ARN:\n{}",
            relay.output_redacted(&secrets)
        );
        assert_nothing_printed(&relay, &secrets);
        fake.assert_read_once();
        eprintln!("case {i}: {}", relay.output_redacted(&secrets));
    }
}

/// The `mqttPassword` from the secret is what the relay logs in to the broker with: a Mosquitto
/// started by the test that allows no anonymous clients confirms the publish (200) with the right
/// password and refuses the wrong one (503). Skipped when Mosquitto is not installed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_password_from_the_secret_logs_in_to_the_broker() {
    let (Some(mosquitto), Some(passwd)) = (
        find_on_path("mosquitto").or_else(|| find_on_path_in("/usr/sbin", "mosquitto")),
        find_on_path("mosquitto_passwd"),
    ) else {
        eprintln!("mosquitto or mosquitto_passwd not installed: skipping");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    {
        use std::os::unix::fs::PermissionsExt;
        // Mosquitto started as root reads its files as the `mosquitto` user.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod temp dir");
    }
    let password_file = dir.path().join("passwd");
    let made = std::process::Command::new(&passwd)
        .arg("-b")
        .arg("-c")
        .arg(&password_file)
        .arg("relay")
        .arg(MQTT_PASSWORD)
        .output()
        .expect("run mosquitto_passwd");
    assert!(made.status.success(), "mosquitto_passwd failed");
    let port = common::free_port();
    let config = dir.path().join("mosquitto.conf");
    std::fs::write(
        &config,
        format!(
            "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {}\npersistence false\n",
            password_file.display()
        ),
    )
    .expect("write mosquitto.conf");
    let config = config.to_string_lossy().into_owned();
    let mut broker = common::spawn(&mosquitto, &["-c", &config], &common::base_env());
    let broker_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    broker.wait_for_port(broker_addr, &ALL_SECRETS).await;

    let body = testkit::sample("app-reload-failed.legacy.json");
    for (password, expected) in [(MQTT_PASSWORD, 200), (WRONG_SECRET, 503)] {
        let document = json!({"webhookSecret": testkit::TEST_SECRET, "mqttPassword": password});
        let fake = FakeSecretsManager::start(Answer::Secret(document.to_string())).await;
        let mut env = relay_env(
            &fake.endpoint,
            SECRET_ARN,
            format!("mqtt://relay@127.0.0.1:{port}"),
            "relay-sm-auth",
        );
        env.push(("PUBLISH_TIMEOUT_MS", "2000".to_owned()));
        let (relay, addr) = start_http_relay(env, &ALL_SECRETS).await;
        let response = post_webhook(addr, &body, &testkit::signature(&body)).await;
        assert_eq!(
            response.status,
            expected,
            "mqttPassword {}: {}\n{}",
            if expected == 200 { "right" } else { "wrong" },
            String::from_utf8_lossy(&response.body),
            relay.output_redacted(&ALL_SECRETS)
        );
        fake.assert_read_once();
        assert_nothing_printed(&relay, &ALL_SECRETS);
    }
    assert_nothing_printed(&broker, &ALL_SECRETS);
}

/// moto's Secrets Manager, when `moto_server` is installed (`pip install "moto[server]"`; CI
/// installs it). A stronger check than the fake: real request validation and real error shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_server_secret_is_resolved() {
    let Some(moto) = find_on_path("moto_server") else {
        eprintln!("moto_server not on PATH: skipping (pip install \"moto[server]\")");
        return;
    };
    let port = common::free_port();
    let moto_addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut env = common::base_env();
    env.push((
        "MOTO_ALLOW_NONEXISTENT_REGION".to_owned(),
        "true".to_owned(),
    ));
    let mut server = common::spawn(&moto, &["-H", "127.0.0.1", "-p", &port.to_string()], &env);
    server.wait_for_port(moto_addr, &[]).await;
    let endpoint = format!("http://{moto_addr}");

    let name = testkit::unique("relay-moto");
    let document = json!({
        "webhookSecret": testkit::TEST_SECRET,
        "mqttPassword": MQTT_PASSWORD,
    });
    let created = moto_call(
        moto_addr,
        "CreateSecret",
        json!({"Name": name, "SecretString": document.to_string()}),
    )
    .await;
    assert_eq!(
        created.status,
        200,
        "{}",
        String::from_utf8_lossy(&created.body)
    );
    let arn = created.json()["ARN"]
        .as_str()
        .expect("CreateSecret returns the ARN")
        .to_owned();

    let broker = testkit::embedded();
    let root = testkit::unique("relay-sm-moto");
    let mqtt_url = format!("mqtt://relay@{}:{}", broker.host, broker.port);
    let (relay, addr) =
        start_http_relay(relay_env(&endpoint, &arn, mqtt_url, &root), &ALL_SECRETS).await;
    let body = testkit::hybrid_sample();
    let response = post_webhook(addr, &body, &testkit::signature(&body)).await;
    assert_ok(&response, &relay);
    let response = post_webhook(addr, &body, &qlik_events::sign(WRONG_SECRET, &body)).await;
    assert_eq!(response.status, 401);
    assert_nothing_printed(&relay, &ALL_SECRETS);
    drop(relay);

    // A secret moto does not have: its real ResourceNotFoundException stops the start.
    let missing = format!("{arn}-gone");
    assert_secret_stops_startup(
        &endpoint,
        &missing,
        "relay-sm-moto-missing",
        "ResourceNotFoundException",
    )
    .await;
}

async fn moto_call(addr: SocketAddr, operation: &str, request: Value) -> common::HttpResponse {
    let target = format!("secretsmanager.{operation}");
    common::http_request(
        addr,
        "POST",
        "/",
        &[
            ("Content-Type", "application/x-amz-json-1.1"),
            ("X-Amz-Target", &target),
            (
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/secretsmanager/aws4_request, SignedHeaders=host, Signature=0",
            ),
        ],
        request.to_string().as_bytes(),
    )
    .await
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn find_on_path_in(dir: &str, program: &str) -> Option<std::path::PathBuf> {
    let candidate = Path::new(dir).join(program);
    is_executable(&candidate).then_some(candidate)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
