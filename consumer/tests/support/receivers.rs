//! Fake Slack/Teams/webhook receivers on 127.0.0.1: each answers as its [`Mode`] says and
//! records what it was sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::mpsc;

use super::WAIT;

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

/// Serves `app` on 127.0.0.1 (a free port) for the rest of the test; returns its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
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
        let addr = serve(app).await;
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

    /// A receiver that answers every request with an error until `set_mode` says otherwise.
    pub async fn failing() -> Receiver {
        let receiver = Receiver::start().await;
        receiver.set_mode(Mode::Fail);
        receiver
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
