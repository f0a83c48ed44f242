//! Support shared by the relay's process-level tests: the shipped `events/*.json` files and what
//! each one must produce, running the real relay binary as a child process (`testkit::process`),
//! and a minimal HTTP/1.1 client (enough for the relay's HTTP mode and for fake AWS endpoints).
//!
//! Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

pub use testkit::process::{Process, WAIT};

/// `relay-fn/events/`.
pub fn events_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("events")
}

/// The relay binary under test: `RELAY_FN_BIN` (CI points it at `target/release/relay-fn`), else
/// the debug binary Cargo built for this test run.
pub fn relay_bin() -> PathBuf {
    match std::env::var_os("RELAY_FN_BIN") {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_relay-fn")),
    }
}

/// What the relay must answer to an event file, decided by the file's name:
/// `*bad-signature*` → 401, `*.get.json` → 405, anything else is correctly signed → 200.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    Published,
    BadSignature,
    MethodNotAllowed,
}

impl Expect {
    pub fn for_file(name: &str) -> Expect {
        if name.contains("bad-signature") {
            Expect::BadSignature
        } else if name.ends_with(".get.json") {
            Expect::MethodNotAllowed
        } else {
            Expect::Published
        }
    }

    pub fn status(self) -> u16 {
        match self {
            Expect::Published => 200,
            Expect::BadSignature => 401,
            Expect::MethodNotAllowed => 405,
        }
    }
}

/// One `events/*.json` file, read back the way lambda_http reads it.
#[derive(Debug, Clone)]
pub struct EventFile {
    pub name: String,
    /// The file as it is on disk (what the emulator hands to the runtime).
    pub raw: Vec<u8>,
    pub expect: Expect,
    /// `2.0` (Function URL / HTTP API) or `1.0` (REST API).
    pub payload_version: &'static str,
    pub method: String,
    /// The webhook body after base64 decoding when `isBase64Encoded` is set.
    pub body: Vec<u8>,
    pub signature: Option<String>,
}

impl EventFile {
    pub fn parse(name: &str, raw: Vec<u8>) -> Result<EventFile, String> {
        let event: Value = serde_json::from_slice(&raw).map_err(|e| format!("{name}: {e}"))?;
        let payload_version = if event.get("httpMethod").is_some() {
            "1.0"
        } else if event.get("version").and_then(Value::as_str) == Some("2.0") {
            "2.0"
        } else {
            return Err(format!("{name}: neither a payload 1.0 nor a 2.0 event"));
        };
        let method = match payload_version {
            "1.0" => event["httpMethod"].as_str(),
            _ => event["requestContext"]["http"]["method"].as_str(),
        }
        .ok_or_else(|| format!("{name}: no HTTP method"))?
        .to_owned();
        let text = event
            .get("body")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let body = if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .map_err(|e| format!("{name}: body is not base64: {e}"))?
        } else {
            text.as_bytes().to_vec()
        };
        let signature = header(&event, "qlik-signature");
        Ok(EventFile {
            name: name.to_owned(),
            raw,
            expect: Expect::for_file(name),
            payload_version,
            method,
            body,
            signature,
        })
    }
}

/// A header of a payload 1.0 or 2.0 event, by case-insensitive name.
pub fn header(event: &Value, name: &str) -> Option<String> {
    let single = event
        .get("headers")
        .and_then(Value::as_object)
        .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
        .and_then(|(_, v)| v.as_str())
        .map(str::to_owned);
    single.or_else(|| {
        event
            .get("multiValueHeaders")
            .and_then(Value::as_object)
            .and_then(|h| h.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)))
            .and_then(|(_, v)| v.get(0))
            .and_then(Value::as_str)
            .map(str::to_owned)
    })
}

/// Every `events/*.json`, sorted by name.
pub fn event_files() -> Vec<EventFile> {
    let dir = events_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").file_name())
        .filter_map(|n| n.to_str().map(str::to_owned))
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(!names.is_empty(), "no event files in {}", dir.display());
    names
        .iter()
        .map(|name| {
            let raw = std::fs::read(dir.join(name)).expect("event file is readable");
            EventFile::parse(name, raw).unwrap_or_else(|e| panic!("{e}"))
        })
        .collect()
}

/// The first event file (by name) that should give `expect`.
pub fn first_event(expect: Expect) -> EventFile {
    event_files()
        .into_iter()
        .find(|f| f.expect == expect)
        .unwrap_or_else(|| panic!("no event file gives {expect:?}"))
}

/// The topic the relay must publish `body` to under Butler's default scheme and `root`.
pub fn expected_topic(root: &str, body: &[u8]) -> String {
    let envelope = qlik_events::Envelope::parse(body).expect("event body is a Qlik envelope");
    qlik_events::TopicRouting::with_root(root)
        .expect("valid topic root")
        .topic_for(&envelope)
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.local_addr().expect("local address").port()
}

/// A loopback port for a child process to listen on. There is a small window in which another
/// process could take it; good enough for tests.
pub fn free_port() -> u16 {
    closed_port()
}

/// The environment every relay run starts from: nothing inherited from the developer's shell
/// (no stray `AWS_*`, `MQTT_*`), no AWS config files, readable logs.
pub fn base_env() -> Vec<(String, String)> {
    let mut env = vec![
        (
            "AWS_CONFIG_FILE".to_owned(),
            "/nonexistent/aws/config".to_owned(),
        ),
        (
            "AWS_SHARED_CREDENTIALS_FILE".to_owned(),
            "/nonexistent/aws/credentials".to_owned(),
        ),
        ("AWS_EC2_METADATA_DISABLED".to_owned(), "true".to_owned()),
    ];
    if let Ok(path) = std::env::var("PATH") {
        env.push(("PATH".to_owned(), path));
    }
    // The relay's own default filter unless the developer asks for more.
    if let Ok(filter) = std::env::var("RELAY_TEST_RUST_LOG") {
        env.push(("RUST_LOG".to_owned(), filter));
    }
    env
}

/// Starts `program` with exactly `env` (the parent's environment is not inherited).
pub fn spawn(program: &Path, args: &[&str], env: &[(String, String)]) -> Process {
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    Process::spawn(command)
}

/// The relay binary under test with `env` on top of [`base_env`].
pub fn relay(env: &[(&str, String)]) -> Process {
    let mut all = base_env();
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    spawn(&relay_bin(), &[], &all)
}

/// An HTTP response as the minimal client reads it.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`), bounded by [`WAIT`].
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpResponse {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .unwrap_or_else(|_| panic!("no HTTP response from {addr} within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("HTTP exchange with {addr} failed: {e}"));
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response has a header section");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = data.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&data[..end]);
        let size_text = size_text.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            return out;
        };
        if size == 0 || data.len() < end + 2 + size {
            return out;
        }
        out.extend_from_slice(&data[end + 2..end + 2 + size]);
        data = &data[(end + 2 + size + 2).min(data.len())..];
    }
}

/// Polls `GET /healthz` on `addr` until it answers `status`, bounded by [`WAIT`]; the relay's
/// health follows its broker connection, which changes in the background.
pub async fn await_health(addr: SocketAddr, status: u16) -> HttpResponse {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let response = http_request(addr, "GET", "/healthz", &[], b"").await;
        if response.status == status {
            return response;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/healthz still answers {} ({}) after {WAIT:?}, not {status}",
            response.status,
            String::from_utf8_lossy(&response.body)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
