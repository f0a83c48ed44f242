//! The shipped `sam local invoke -e` events in `relay-fn/events/`.
//!
//! `UPDATE_EVENTS=1 cargo test -p relay-fn --test events` rewrites them from the samples in
//! `testdata/qlik-samples/` (signed with `testkit::TEST_SECRET`). Without it, this checks that the
//! files are exactly what the generator produces, that lambda_http reads each one as the intended
//! event source, and that each signature verifies, or does not, as the file's name says.

mod common;

use base64::Engine as _;
use common::Expect;
use lambda_http::request::{LambdaRequest, RequestOrigin};
use serde_json::{Value, json};

/// A Function URL host: `<url-id>.lambda-url.<region>.on.aws`.
const URL_ID: &str = "x3kq7vbz2mhn5wtc8yfd4rjs6pla9geu";
const REGION: &str = "eu-west-1";
/// Documentation address range (RFC 5737) for the caller.
const SOURCE_IP: &str = "203.0.113.24";
const QLIK_USER_AGENT: &str = "Qlik Webhook";
/// A fixed delivery time, so regenerating changes nothing unless the inputs change.
const TIME_EPOCH_MS: i64 = 1_795_936_000_000;
const TIME: &str = "30/Nov/2026:07:06:40 +0000";

#[derive(Clone, Copy)]
enum Source {
    /// Lambda Function URL, payload 2.0 (what `template.yaml` deploys).
    FunctionUrl,
    /// API Gateway HTTP API, payload 2.0.
    HttpApi,
    /// API Gateway REST API proxy integration, payload 1.0.
    RestApi,
}

#[derive(Clone, Copy)]
enum Signing {
    /// `qlik-signature` = HMAC-SHA256(TEST_SECRET, body).
    Good,
    /// A well-formed signature made with another secret.
    WrongSecret,
    /// No body, no signature (a browser or a probe).
    None,
}

struct Spec {
    file: &'static str,
    api: Source,
    method: &'static str,
    body: Vec<u8>,
    signing: Signing,
    base64: bool,
}

fn specs() -> Vec<Spec> {
    let legacy = testkit::sample("app-reload-failed.legacy.json");
    let app_reload = testkit::sample("app-reload-failed.cloudevents.json");
    let reload = testkit::sample("reload-finished-failed.cloudevents.json");
    let hybrid = testkit::hybrid_sample();
    let post = |file, api, body: &[u8]| Spec {
        file,
        api,
        method: "POST",
        body: body.to_vec(),
        signing: Signing::Good,
        base64: false,
    };
    vec![
        post("function-url.legacy.json", Source::FunctionUrl, &legacy),
        post(
            "function-url.cloudevents-app-reload.json",
            Source::FunctionUrl,
            &app_reload,
        ),
        post(
            "function-url.cloudevents-reload-finished.json",
            Source::FunctionUrl,
            &reload,
        ),
        post("function-url.hybrid.json", Source::FunctionUrl, &hybrid),
        Spec {
            base64: true,
            ..post(
                "function-url.base64-body.json",
                Source::FunctionUrl,
                &app_reload,
            )
        },
        Spec {
            signing: Signing::WrongSecret,
            ..post(
                "function-url.bad-signature.json",
                Source::FunctionUrl,
                &app_reload,
            )
        },
        Spec {
            method: "GET",
            signing: Signing::None,
            ..post("function-url.get.json", Source::FunctionUrl, b"")
        },
        post(
            "http-api.cloudevents-reload-finished.json",
            Source::HttpApi,
            &reload,
        ),
        post("rest-api.legacy.json", Source::RestApi, &legacy),
    ]
}

/// A request id that is stable per file.
fn request_id(file: &str) -> String {
    let digest = qlik_events::sign("relay-fn events request id namespace!!", file.as_bytes());
    format!(
        "{}-{}-4{}-8{}-{}",
        &digest[0..8],
        &digest[8..12],
        &digest[13..16],
        &digest[17..20],
        &digest[20..32]
    )
}

fn trace_id(file: &str) -> String {
    let digest = qlik_events::sign("relay-fn events trace id namespace!!!!", file.as_bytes());
    format!("Root=1-{:x}-{}", TIME_EPOCH_MS / 1000, &digest[..24])
}

fn event(spec: &Spec) -> Value {
    let signature = match spec.signing {
        Signing::Good => Some(testkit::signature(&spec.body)),
        Signing::WrongSecret => Some(qlik_events::sign(
            "not-the-configured-secret-0000000000000000",
            &spec.body,
        )),
        Signing::None => None,
    };
    let body = if spec.base64 {
        base64::engine::general_purpose::STANDARD.encode(&spec.body)
    } else {
        String::from_utf8(spec.body.clone()).expect("samples are UTF-8")
    };
    let user_agent = match spec.signing {
        Signing::None => "curl/8.5.0",
        _ => QLIK_USER_AGENT,
    };
    let (host, account, api_id, domain_prefix) = match spec.api {
        Source::FunctionUrl => (
            format!("{URL_ID}.lambda-url.{REGION}.on.aws"),
            "anonymous",
            URL_ID,
            URL_ID,
        ),
        Source::HttpApi | Source::RestApi => (
            format!("k7d2x9qf4m.execute-api.{REGION}.amazonaws.com"),
            "123456789012",
            "k7d2x9qf4m",
            "k7d2x9qf4m",
        ),
    };
    // Header names as the service delivers them: lower case in payload 2.0, as sent in 1.0.
    let mut headers: Vec<(&str, String)> = vec![
        ("Host", host.clone()),
        ("User-Agent", user_agent.to_owned()),
        ("X-Amzn-Trace-Id", trace_id(spec.file)),
        ("X-Forwarded-For", SOURCE_IP.to_owned()),
        ("X-Forwarded-Port", "443".to_owned()),
        ("X-Forwarded-Proto", "https".to_owned()),
    ];
    if spec.method == "POST" {
        headers.push(("Content-Length", spec.body.len().to_string()));
        headers.push(("Content-Type", "application/json".to_owned()));
    } else {
        headers.push(("Accept", "*/*".to_owned()));
    }
    if let Some(signature) = &signature {
        headers.push(("Qlik-Signature", signature.clone()));
    }
    let has_body = !spec.body.is_empty();
    match spec.api {
        Source::FunctionUrl | Source::HttpApi => {
            if matches!(spec.api, Source::FunctionUrl) {
                headers.push(("X-Amzn-Tls-Cipher-Suite", "TLS_AES_128_GCM_SHA256".into()));
                headers.push(("X-Amzn-Tls-Version", "TLSv1.3".into()));
            }
            let headers: serde_json::Map<String, Value> = headers
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v)))
                .collect();
            let route_key = match spec.api {
                Source::FunctionUrl => "$default".to_owned(),
                _ => format!("{} /", spec.method),
            };
            let mut event = json!({
                "version": "2.0",
                "routeKey": route_key,
                "rawPath": "/",
                "rawQueryString": "",
                "headers": headers,
                "requestContext": {
                    "accountId": account,
                    "apiId": api_id,
                    "domainName": host,
                    "domainPrefix": domain_prefix,
                    "http": {
                        "method": spec.method,
                        "path": "/",
                        "protocol": "HTTP/1.1",
                        "sourceIp": SOURCE_IP,
                        "userAgent": user_agent,
                    },
                    "requestId": request_id(spec.file),
                    "routeKey": route_key,
                    "stage": "$default",
                    "time": TIME,
                    "timeEpoch": TIME_EPOCH_MS,
                },
                "isBase64Encoded": spec.base64,
            });
            if has_body {
                event["body"] = Value::String(body);
            }
            event
        }
        Source::RestApi => {
            let single: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                .collect();
            let multi: serde_json::Map<String, Value> = headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!([v])))
                .collect();
            json!({
                "resource": "/",
                "path": "/",
                "httpMethod": spec.method,
                "headers": single,
                "multiValueHeaders": multi,
                "queryStringParameters": null,
                "multiValueQueryStringParameters": null,
                "pathParameters": null,
                "stageVariables": null,
                "requestContext": {
                    "accountId": account,
                    "apiId": api_id,
                    "domainName": host,
                    "domainPrefix": domain_prefix,
                    "extendedRequestId": "Qv3kXHbeDoEFk2w=",
                    "httpMethod": spec.method,
                    "identity": {
                        "sourceIp": SOURCE_IP,
                        "userAgent": user_agent,
                    },
                    "path": "/prod/",
                    "protocol": "HTTP/1.1",
                    "requestId": request_id(spec.file),
                    "requestTime": TIME,
                    "requestTimeEpoch": TIME_EPOCH_MS,
                    "resourceId": "a1b2c3d4e5",
                    "resourcePath": "/",
                    "stage": "prod",
                },
                "body": if has_body { Value::String(body) } else { Value::Null },
                "isBase64Encoded": spec.base64,
            })
        }
    }
}

fn render(spec: &Spec) -> Vec<u8> {
    let mut text = serde_json::to_string_pretty(&event(spec)).expect("event serializes");
    text.push('\n');
    text.into_bytes()
}

/// With `UPDATE_EVENTS=1`, rewrites `events/` (once per test run, before any test reads it).
fn update_if_asked() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        if std::env::var_os("UPDATE_EVENTS").is_none_or(|v| v != "1") {
            return;
        }
        let dir = common::events_dir();
        std::fs::create_dir_all(&dir).expect("create events dir");
        for entry in std::fs::read_dir(&dir).expect("read events dir") {
            let path = entry.expect("dir entry").path();
            if path.extension().is_some_and(|e| e == "json") {
                std::fs::remove_file(&path).expect("remove stale event file");
            }
        }
        let specs = specs();
        for spec in &specs {
            std::fs::write(dir.join(spec.file), render(spec)).expect("write event file");
        }
        eprintln!("wrote {} event files to {}", specs.len(), dir.display());
    });
}

#[test]
fn event_files_are_generated_from_the_samples() {
    update_if_asked();
    let dir = common::events_dir();
    let specs = specs();
    let mut stale = Vec::new();
    for spec in &specs {
        let on_disk = std::fs::read(dir.join(spec.file)).unwrap_or_default();
        if on_disk != render(spec) {
            stale.push(spec.file);
        }
    }
    let mut expected: Vec<&str> = specs.iter().map(|s| s.file).collect();
    expected.sort_unstable();
    let present: Vec<String> = common::event_files().into_iter().map(|e| e.name).collect();
    assert_eq!(
        present, expected,
        "events/ holds other files than the generator writes; run UPDATE_EVENTS=1 cargo test -p relay-fn --test events"
    );
    assert!(
        stale.is_empty(),
        "out of date: {stale:?}; run UPDATE_EVENTS=1 cargo test -p relay-fn --test events"
    );
}

/// Reads each file the way lambda_http does and checks the request the relay would see.
#[test]
fn signatures_verify_as_the_file_names_say() {
    update_if_asked();
    let secrets =
        qlik_events::WebhookSecrets::from_list(testkit::TEST_SECRET).expect("test secret is valid");
    for file in common::event_files() {
        let name = &file.name;
        let request: LambdaRequest = serde_json::from_slice(&file.raw)
            .unwrap_or_else(|e| panic!("{name}: lambda_http rejects the event: {e}"));
        match (file.payload_version, request.request_origin()) {
            ("1.0", RequestOrigin::ApiGatewayV1) | ("2.0", RequestOrigin::ApiGatewayV2) => {}
            (version, origin) => panic!("{name}: payload {version} read as {origin:?}"),
        }
        let request: http::Request<lambda_http::Body> = request.into();
        assert_eq!(request.method().as_str(), file.method, "{name}: method");
        let body: &[u8] = request.body().as_ref();
        assert_eq!(
            body,
            file.body.as_slice(),
            "{name}: body as the relay sees it"
        );
        let signature = request
            .headers()
            .get(qlik_events::SIGNATURE_HEADER)
            .map(|v| v.to_str().expect("ASCII signature").to_owned());
        assert_eq!(signature, file.signature, "{name}: signature header");
        let verified = signature
            .as_deref()
            .is_some_and(|s| secrets.verify(Some(s.as_bytes()), body).is_ok());
        match file.expect {
            Expect::Published => {
                assert!(verified, "{name}: signature must verify");
                assert_eq!(file.method, "POST", "{name}");
                let envelope = qlik_events::Envelope::parse(body)
                    .unwrap_or_else(|e| panic!("{name}: body is not an envelope: {e}"));
                assert!(!envelope.id.is_empty(), "{name}");
            }
            Expect::BadSignature => {
                assert!(signature.is_some(), "{name}: carries a signature");
                assert!(!verified, "{name}: signature must not verify");
            }
            Expect::MethodNotAllowed => assert_ne!(file.method, "POST", "{name}"),
        }
        let user_agent = request.headers().get("user-agent").map(|v| v.as_bytes());
        if file.method == "POST" {
            assert_eq!(user_agent, Some(QLIK_USER_AGENT.as_bytes()), "{name}");
            assert_eq!(
                request.headers().get("content-type").map(|v| v.as_bytes()),
                Some(&b"application/json"[..]),
                "{name}"
            );
        }
    }
}

#[test]
fn every_envelope_format_and_event_source_is_covered() {
    update_if_asked();
    let files = common::event_files();
    let mut formats: Vec<&str> = files
        .iter()
        .filter(|f| f.expect == Expect::Published)
        .map(|f| {
            qlik_events::Envelope::parse(&f.body)
                .expect("envelope")
                .format
                .as_str()
        })
        .collect();
    formats.sort_unstable();
    formats.dedup();
    assert_eq!(
        formats.len(),
        3,
        "legacy, hybrid and CloudEvents: {formats:?}"
    );
    assert!(files.iter().any(|f| f.payload_version == "1.0"));
    assert!(files.iter().any(|f| f.payload_version == "2.0"));
    assert!(
        files.iter().any(|f| {
            let event: Value = serde_json::from_slice(&f.raw).expect("JSON");
            event["isBase64Encoded"] == Value::Bool(true)
        }),
        "one event has a base64-encoded body"
    );
    for expect in [
        Expect::Published,
        Expect::BadSignature,
        Expect::MethodNotAllowed,
    ] {
        assert!(files.iter().any(|f| f.expect == expect), "{expect:?}");
    }
}
