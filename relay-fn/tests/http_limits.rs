//! The relay binary in HTTP mode as a public endpoint: raw TCP clients that stall in their
//! headers or body, idle keep-alive connections, more connections than the cap, a client that
//! sends an oversized body in full before reading; and the settings that guard what it
//! publishes (event age by default, plain-text broker credentials).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{Process, WAIT};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Starts the relay in HTTP mode on a free port, against the embedded broker, with `env` on top.
async fn start(env: &[(&'static str, &str)]) -> (Process, SocketAddr) {
    let addr: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let mut all = vec![
        ("WEBHOOK_SECRET", testkit::TEST_SECRET.to_owned()),
        ("MQTT_URL", testkit::embedded().url()),
        ("MQTT_TOPIC_ROOT", testkit::unique("relay-http-limits")),
        ("LISTEN_ADDR", addr.to_string()),
    ];
    all.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    let mut relay = common::relay(&all);
    relay.wait_for_port(addr, &[]).await;
    // /healthz (which some tests use as their request) is 200 once the broker accepted the relay.
    common::await_health(addr, 200).await;
    (relay, addr)
}

/// Everything the server sends until it closes the connection, bounded by [`WAIT`].
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("the relay closes the connection in time")
        .expect("the connection closes cleanly, not with a reset");
    raw
}

/// One response on a kept-alive connection: its head, and the body by `content-length`.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = stream.read(&mut chunk).await.expect("read a response");
            assert!(n > 0, "closed before a whole response arrived");
            raw.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&raw).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if raw.len() >= end + 4 + length {
                    return text;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("a response in time")
}

fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

const HEALTH: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_its_headers_gets_408_and_is_closed() {
    let (_relay, addr) = start(&[
        ("HTTP_HEADER_TIMEOUT_SECS", "1"),
        ("HTTP_IDLE_TIMEOUT_SECS", "30"),
    ])
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let started = Instant::now();
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Ty")
        .await
        .unwrap();
    let raw = read_until_closed(&mut stream).await;
    assert_eq!(status_of(&raw), 408);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(20),
        "closed by the header timeout (1 s), not the idle one (30 s): {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_stalling_in_its_body_gets_408_and_is_closed() {
    let (relay, addr) = start(&[("HTTP_BODY_TIMEOUT_SECS", "1")]).await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST / HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
              Content-Length: 100\r\n\r\n{\"specversion\"",
        )
        .await
        .unwrap();
    let raw = read_until_closed(&mut stream).await;
    assert_eq!(status_of(&raw), 408, "{}", String::from_utf8_lossy(&raw));
    let mut relay = relay;
    relay
        .wait_until("the body_timeout log line", |l| l.contains("body_timeout"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_relay, addr) = start(&[
        ("HTTP_IDLE_TIMEOUT_SECS", "1"),
        ("HTTP_HEADER_TIMEOUT_SECS", "30"),
    ])
    .await;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    let response = read_response(&mut stream).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // Kept alive after the answer, then closed once idle for 1 s (no 408 for an idle client).
    let idle_since = Instant::now();
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
    let idle = idle_since.elapsed();
    assert!(
        idle >= Duration::from_millis(900) && idle < Duration::from_secs(20),
        "closed by the idle timeout (1 s), not the header one (30 s): {idle:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let (mut relay, addr) = start(&[
        ("HTTP_MAX_CONNECTIONS", "2"),
        ("HTTP_IDLE_TIMEOUT_SECS", "60"),
    ])
    .await;
    // wait_for_port's probe connection took a slot for a moment; hold both slots for sure.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(HEALTH).await.unwrap();
        assert!(read_response(&mut stream).await.starts_with("HTTP/1.1 200"));
        held.push(stream);
    }
    relay
        .wait_until("the connection cap warning", |l| {
            l.contains("HTTP_MAX_CONNECTIONS reached")
        })
        .await;
    let mut waiting = TcpStream::connect(addr).await.unwrap();
    waiting.write_all(HEALTH).await.unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(500), waiting.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection is not served while two are held: {early:?}"
    );
    drop(held.pop());
    let response = read_response(&mut waiting).await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "served once a slot is free: {response}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_sent_in_full_before_reading_still_gets_its_413() {
    // The largest limit, twice over, through a small send buffer: far more than the socket
    // buffers hold, so a relay that answered and closed without reading would reset the
    // connection while the client is still writing.
    let (_relay, addr) = start(&[("MAX_BODY_BYTES", "983040")]).await;
    let body = vec![b'x'; 2 * 983_040];
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(8 * 1024).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n\
         Qlik-Signature: {}\r\nContent-Length: {}\r\n\r\n",
        testkit::signature(&body),
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body)
        .await
        .expect("the relay reads the whole body");
    let raw = read_until_closed(&mut stream).await;
    assert_eq!(status_of(&raw), 413, "{}", String::from_utf8_lossy(&raw));

    // A client that waits for 100 Continue is answered before it sends anything.
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: relay\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let raw = read_until_closed(&mut stream).await;
    assert_eq!(status_of(&raw), 413, "{}", String::from_utf8_lossy(&raw));
}

/// A CloudEvents app reload event stamped `age` ago.
fn event_aged(age: Duration) -> Vec<u8> {
    let time = (OffsetDateTime::now_utc() - age)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let id = testkit::unique("event");
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"com.qlik/engine","type":"com.qlik.v1.app.reload.finished","time":"{time}","tenantid":"Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ","toplevelresourceid":"app-1","data":{{"status":"error"}}}}"#
    )
    .into_bytes()
}

async fn post_signed(addr: SocketAddr, body: &[u8]) -> u16 {
    let signature = testkit::signature(body);
    common::http_request(
        addr,
        "POST",
        "/",
        &[
            ("content-type", "application/json"),
            ("qlik-signature", &signature),
        ],
        body,
    )
    .await
    .status
}

const DAY: Duration = Duration::from_secs(24 * 3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_eight_days_are_refused_by_default() {
    let (_relay, addr) = start(&[]).await;
    assert_eq!(post_signed(addr, &event_aged(Duration::ZERO)).await, 200);
    assert_eq!(
        post_signed(addr, &event_aged(7 * DAY)).await,
        200,
        "a resend within Qlik's 7 days passes"
    );
    assert_eq!(post_signed(addr, &event_aged(9 * DAY)).await, 403);
    // The legacy sample (2026-09-14) is a captured request replayed long after.
    let legacy = testkit::sample("app-reload-failed.legacy.json");
    assert_eq!(post_signed(addr, &legacy).await, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_event_age_zero_accepts_old_events() {
    let (_relay, addr) = start(&[("MAX_EVENT_AGE_SECS", "0")]).await;
    assert_eq!(post_signed(addr, &event_aged(30 * DAY)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_text_credentials_to_a_remote_broker_need_an_explicit_yes() {
    let env = |allow: Option<&str>| {
        let mut env = vec![
            ("WEBHOOK_SECRET", testkit::TEST_SECRET.to_owned()),
            // TEST-NET-1: never routed, so nothing is ever sent.
            ("MQTT_URL", "mqtt://relay@192.0.2.1:1883".to_owned()),
            ("MQTT_PASSWORD", "plain-text-password".to_owned()),
            ("LISTEN_ADDR", format!("127.0.0.1:{}", common::free_port())),
        ];
        if let Some(allow) = allow {
            env.push(("MQTT_ALLOW_PLAINTEXT", allow.to_owned()));
        }
        env
    };
    let mut refused = common::relay(&env(None));
    let status = refused.wait_exit(&["plain-text-password"]).await;
    assert!(!status.success());
    let stderr = refused.stderr();
    assert!(
        stderr.contains("MQTT_URL") && stderr.contains("MQTT_ALLOW_PLAINTEXT"),
        "{stderr}"
    );
    assert!(!stderr.contains("plain-text-password"));

    let mut allowed = common::relay(&env(Some("true")));
    allowed
        .wait_until("the plain-text warning", |l| {
            l.contains("MQTT_ALLOW_PLAINTEXT=true")
        })
        .await;
    assert!(allowed.exited().is_none());
}
