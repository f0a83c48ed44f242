//! `/metrics` (Prometheus text) and `/healthz` on `metrics.listen`.
//!
//! `/healthz` is 200 when the consumer can do its job — connected to the broker and, with the
//! Redis store, the store answers a PING — and 503 with a JSON reason otherwise, so a load
//! balancer, systemd watchdog or Kubernetes probe can act on it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
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
    let metrics = super::global();
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
    let broker = super::global().broker_connected();
    let store = match &probe.store {
        None => None,
        Some(store) => Some(store.ping(Duration::from_secs(1)).await),
    };
    let mut reasons = Vec::new();
    if !broker {
        reasons.push("not connected to the MQTT broker");
    }
    if store == Some(false) {
        reasons.push("the state store (Redis) does not answer");
    }
    let store_text = match store {
        None => "file",
        Some(true) => "connected",
        Some(false) => "unreachable",
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
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
}
