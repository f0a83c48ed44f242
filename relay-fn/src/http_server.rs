//! HTTP mode (on-prem, DMZ, container, local development): POST / with the same handler.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use crate::decision::{Body, WebhookRequest};
use crate::service::{Relay, Reply};

pub fn router(relay: Arc<Relay>) -> Router {
    Router::new()
        .route("/", any(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(relay)
}

pub async fn serve(relay: Arc<Relay>, addr: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("LISTEN_ADDR: cannot listen on {addr}: {e}"))?;
    tracing::info!(address = %listener.local_addr()?, "relay listening for Qlik webhooks (POST /)");
    axum::serve(listener, router(relay))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}

async fn webhook(State(relay): State<Arc<Relay>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let limit = relay.policy.max_body_bytes;
    let announced = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    // Only read a body we may use: a wrong method or an announced oversize is refused unread.
    let bytes = if parts.method != http::Method::POST {
        Ok(bytes::Bytes::new())
    } else if announced.is_some_and(|n| n > limit) {
        Err(announced.unwrap_or(limit + 1))
    } else {
        read_limited(body, limit).await
    };
    let body = match &bytes {
        Ok(bytes) => Body::Complete(bytes),
        Err(at_least) => Body::TooLarge {
            at_least: *at_least,
        },
    };
    let reply = relay
        .handle(WebhookRequest {
            method: &parts.method,
            headers: &parts.headers,
            body,
        })
        .await;
    into_response(reply)
}

/// The body, or `Err(bytes seen)` once it passes `limit`. A connection that breaks mid-body is
/// treated as empty: the signature check then refuses it.
async fn read_limited(body: AxumBody, limit: usize) -> Result<bytes::Bytes, usize> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(limit + 1),
        Err(e) => {
            tracing::debug!(error = %e, "request body could not be read");
            Ok(bytes::Bytes::new())
        }
    }
}

fn into_response(reply: Reply) -> Response {
    (
        reply.status,
        [(http::header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response()
}
