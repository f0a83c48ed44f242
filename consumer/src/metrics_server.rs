//! `/metrics` (Prometheus text) and `/healthz` on `metrics.listen`.
//!
//! `/healthz` is 200 when the consumer can do its job — connected to the broker and, with the
//! Redis store, the store answers a PING and no store operation is stuck on a failure — and
//! 503 with a JSON reason otherwise, so a load balancer, systemd watchdog or Kubernetes probe
//! can act on it. A PING alone is not enough: a store out of memory, or demoted to a read-only
//! replica, answers PINGs while refusing every write the consumer needs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use serde_json::json;
use tokio::task::JoinHandle;

use crate::delivery::DeadLetter;
use crate::state::RedisStore;

/// What the endpoints look at.
#[derive(Clone)]
pub struct Probe {
    pub store: Option<RedisStore>,
    pub dead_letter_dir: PathBuf,
    /// Why the consumer cannot start its work yet (tenants whose id is not resolved).
    pub not_ready: NotReady,
}

/// Reasons, by subject, why the consumer is not ready besides the broker and the store: set
/// while a tenant given by hostname waits for its id ([`crate::tenant_id`]), cleared once known.
#[derive(Clone, Default, Debug)]
pub struct NotReady(Arc<Mutex<BTreeMap<String, String>>>);

impl NotReady {
    /// `subject` is not ready, for `reason` (replaces an earlier reason of the same subject).
    pub fn set(&self, subject: &str, reason: impl Into<String>) {
        self.lock().insert(subject.to_owned(), reason.into());
    }

    /// `subject` is ready.
    pub fn clear(&self, subject: &str) {
        self.lock().remove(subject);
    }

    /// Every reason, in subject order.
    pub fn reasons(&self) -> Vec<String> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr} (Butler.qlikSenseCloud.consumer.metrics.listen): {reason}")]
pub struct ServeError {
    pub addr: SocketAddr,
    pub reason: String,
}

/// Binds now (so a taken port fails the start, naming the key) and serves in the background.
pub async fn start(
    addr: SocketAddr,
    probe: Probe,
) -> Result<(SocketAddr, JoinHandle<()>), ServeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| ServeError {
            addr,
            reason: e.to_string(),
        })?;
    let local = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(probe));
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server stopped: {e}");
        }
    });
    tracing::info!(listen = %local, "serving /metrics and /healthz");
    Ok((local, task))
}

async fn metrics(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    // Counted at scrape time: files are the truth, whichever instance parked or replayed them.
    let dead_letter = DeadLetter::new(&probe.dead_letter_dir);
    let parked = tokio::task::spawn_blocking(move || dead_letter.list().map(|l| l.len()))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0);
    let metrics = crate::metrics::global();
    metrics.set_parked(parked);
    if let Some(store) = &probe.store {
        store.ping(Duration::from_secs(1)).await;
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.encode(),
    )
}

async fn healthz(State(probe): State<Arc<Probe>>) -> impl IntoResponse {
    let (status, body) = health(&probe).await;
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}

/// What `/healthz` answers: the status and its JSON body.
pub async fn health(probe: &Probe) -> (StatusCode, serde_json::Value) {
    let (status, body) = health_of(
        crate::metrics::global().broker_connected(),
        probe.store.as_ref(),
    )
    .await;
    with_not_ready(status, body, &probe.not_ready.reasons())
}

/// `reasons` (see [`NotReady`]) added to an answer: any makes it 503.
fn with_not_ready(
    status: StatusCode,
    mut body: serde_json::Value,
    reasons: &[String],
) -> (StatusCode, serde_json::Value) {
    if reasons.is_empty() {
        return (status, body);
    }
    let mut all: Vec<String> = body["reason"]
        .as_str()
        .map(|r| vec![r.to_owned()])
        .unwrap_or_default();
    all.extend(reasons.iter().cloned());
    body["status"] = json!("unavailable");
    body["reason"] = json!(all.join("; "));
    (StatusCode::SERVICE_UNAVAILABLE, body)
}

/// [`health`] with the broker's state given, so it can be tested beside other tests that
/// move the process-wide flag.
pub(crate) async fn health_of(
    broker: bool,
    store: Option<&RedisStore>,
) -> (StatusCode, serde_json::Value) {
    let store = match store {
        None => StoreHealth::File,
        Some(store) if !store.ping(Duration::from_secs(1)).await => StoreHealth::Unreachable,
        Some(store) => match store.failing() {
            Some(reason) => StoreHealth::Failing(reason),
            None => StoreHealth::Connected,
        },
    };
    report(broker, &store)
}

enum StoreHealth {
    File,
    Connected,
    Unreachable,
    /// Answers PINGs, but an operation is stuck on a failure (out of memory, read-only...).
    Failing(String),
}

fn report(broker: bool, store: &StoreHealth) -> (StatusCode, serde_json::Value) {
    let mut reasons = Vec::new();
    if !broker {
        reasons.push("not connected to the MQTT broker".to_owned());
    }
    match store {
        StoreHealth::Unreachable => {
            reasons.push("the state store (Redis) does not answer".to_owned());
        }
        StoreHealth::Failing(why) => reasons.push(format!("the state store (Redis) fails: {why}")),
        StoreHealth::File | StoreHealth::Connected => {}
    }
    let store_text = match store {
        StoreHealth::File => "file",
        StoreHealth::Connected => "connected",
        StoreHealth::Unreachable => "unreachable",
        StoreHealth::Failing(_) => "failing",
    };
    let broker_text = if broker { "connected" } else { "disconnected" };
    let (status, body) = if reasons.is_empty() {
        (
            StatusCode::OK,
            json!({"status": "ok", "broker": broker_text, "store": store_text}),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({
                "status": "unavailable",
                "reason": reasons.join("; "),
                "broker": broker_text,
                "store": store_text,
            }),
        )
    };
    (status, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_store_is_unhealthy_with_its_reason() {
        let why = "mark done failed: the store is out of memory (maxmemory reached): OOM";
        let (status, body) = report(true, &StoreHealth::Failing(why.into()));
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["status"], "unavailable");
        assert_eq!(body["store"], "failing");
        assert_eq!(body["broker"], "connected");
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("state store") && reason.contains(why),
            "{body}"
        );

        let (status, body) = report(true, &StoreHealth::Connected);
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["store"], "connected");
        let (status, body) = report(false, &StoreHealth::File);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["store"], "file");
    }

    #[test]
    fn a_tenant_without_its_id_makes_the_consumer_unready_with_the_reason() {
        let not_ready = NotReady::default();
        let why = "tenant tenant.region.qlikcloud.com: tenant id not resolved yet (HTTP 503)";
        not_ready.set("tenant.region.qlikcloud.com", why);
        let (ok, body) = report(true, &StoreHealth::File);
        let (status, body) = with_not_ready(ok, body, &not_ready.reasons());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["reason"], why);
        let (down, body) = report(false, &StoreHealth::File);
        let (_, body) = with_not_ready(down, body, &not_ready.reasons());
        let reason = body["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains("MQTT broker") && reason.contains(why),
            "{body}"
        );
        not_ready.clear("tenant.region.qlikcloud.com");
        let (ok, body) = report(true, &StoreHealth::File);
        assert_eq!(
            with_not_ready(ok, body, &not_ready.reasons()).0,
            StatusCode::OK
        );
    }
}
