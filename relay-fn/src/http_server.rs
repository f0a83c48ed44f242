//! HTTP mode (on-prem, DMZ, container, local development): POST / with the same handler,
//! `GET /healthz` (200 only while the broker connection is up) and `GET /metrics` (Prometheus
//! text), the last two on `METRICS_LISTEN_ADDR` instead when it is set.
//!
//! Its own accept loop rather than `axum::serve`, which sets no timeout at all: a client that
//! stops in the middle of its headers or body would hold its connection (and a file descriptor)
//! forever. Here every connection is bounded by [`HttpLimits`]: headers, body and idle time each
//! have a deadline, and at most `max_connections` are served at once (further ones wait in the
//! listen backlog until one closes).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body as AxumBody;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use http::StatusCode;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The bounds live with the other settings; re-exported under their old path.
pub use crate::config::HttpLimits;
use crate::decision::{Body, WebhookRequest};
use crate::publisher::LinkState;
use crate::service::{Relay, Reply};

/// How much of a refused body is still read (and thrown away), so that a client which sends its
/// whole body before reading gets the `413` instead of a reset connection.
const DISCARD_LIMIT: usize = 4 * 1024 * 1024;

/// How long requests in progress may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

#[derive(Clone)]
struct AppState {
    relay: Arc<Relay>,
    body_timeout: Duration,
}

/// What one listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// `POST /`, `/healthz` and `/metrics`: one listener for everything.
    All,
    /// `POST /` only (the public listener when `METRICS_LISTEN_ADDR` is set).
    Webhook,
    /// `/healthz` and `/metrics` only (`METRICS_LISTEN_ADDR`).
    Operations,
}

/// Every route on one listener.
pub fn router(relay: Arc<Relay>, body_timeout: Duration) -> Router {
    routes(relay, body_timeout, Routes::All)
}

pub fn routes(relay: Arc<Relay>, body_timeout: Duration, routes: Routes) -> Router {
    let mut router = Router::new();
    if routes != Routes::Operations {
        router = router.route("/", any(webhook));
    }
    if routes != Routes::Webhook {
        router = router
            .route("/healthz", get(healthz))
            .route("/metrics", get(metrics));
    }
    router.with_state(AppState {
        relay,
        body_timeout,
    })
}

/// `/healthz`'s answer for the broker connection's state: a load balancer stops sending
/// webhooks to a relay that could only answer them with 503. The body names the reason and
/// nothing more (no address, no broker message): the listener may be public.
pub fn health(link: &LinkState) -> (StatusCode, &'static str) {
    match link {
        LinkState::Connected => (StatusCode::OK, "ok"),
        LinkState::Connecting => (StatusCode::SERVICE_UNAVAILABLE, "mqtt: connecting"),
        LinkState::Down {
            refused: Some(_), ..
        } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "mqtt: broker refused the connection",
        ),
        LinkState::Down { .. } => (StatusCode::SERVICE_UNAVAILABLE, "mqtt: broker unreachable"),
    }
}

async fn healthz(State(app): State<AppState>) -> Response {
    let (status, body) = health(&app.relay.publisher.link_state().await);
    (status, body).into_response()
}

async fn metrics(State(app): State<AppState>) -> Response {
    let connected = app.relay.publisher.link_state().await == LinkState::Connected;
    (
        [(http::header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
        app.relay.exposition.encode(connected),
    )
        .into_response()
}

/// Where HTTP mode listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    /// `LISTEN_ADDR`: the webhook.
    pub webhook: SocketAddr,
    /// `METRICS_LISTEN_ADDR`: `/healthz` and `/metrics` apart from the webhook.
    pub operations: Option<SocketAddr>,
}

async fn bind(addr: SocketAddr, variable: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{variable}: cannot listen on {addr}: {e}"))
}

/// HTTP mode: keeps the broker connection up in the background and serves until SIGTERM.
pub async fn serve(relay: Arc<Relay>, listen: Listen, limits: HttpLimits) -> anyhow::Result<()> {
    let listener = bind(listen.webhook, "LISTEN_ADDR").await?;
    let operations = match listen.operations {
        Some(addr) => Some(bind(addr, "METRICS_LISTEN_ADDR").await?),
        None => None,
    };
    let keeper = tokio::spawn({
        let relay = relay.clone();
        async move { relay.publisher.keep_connected().await }
    });
    tracing::info!(
        address = %listener.local_addr()?,
        header_timeout_s = limits.header_timeout.as_secs(),
        body_timeout_s = limits.body_timeout.as_secs(),
        idle_timeout_s = limits.idle_timeout.as_secs(),
        max_connections = limits.max_connections,
        "relay listening for Qlik webhooks (POST /)"
    );
    // One signal, two servers: each waits for the flag to turn.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    match operations {
        None => {
            let app = routes(relay, limits.body_timeout, Routes::All);
            serve_router(listener, app, limits, until_stopped(stopped)).await;
        }
        Some(operations) => {
            tracing::info!(
                address = %operations.local_addr()?,
                "relay serving /healthz and /metrics (METRICS_LISTEN_ADDR)"
            );
            let webhook = routes(relay.clone(), limits.body_timeout, Routes::Webhook);
            let ops = routes(relay, limits.body_timeout, Routes::Operations);
            tokio::join!(
                serve_router(listener, webhook, limits, until_stopped(stopped.clone())),
                serve_router(operations, ops, limits, until_stopped(stopped)),
            );
        }
    }
    keeper.abort();
    Ok(())
}

/// Serves `listener` until `shutdown` completes, then lets requests in progress finish.
pub async fn serve_listener(
    listener: TcpListener,
    relay: Arc<Relay>,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    serve_router(
        listener,
        router(relay, limits.body_timeout),
        limits,
        shutdown,
    )
    .await;
}

async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut at_cap = false;
    loop {
        // Take a slot before accepting: beyond the cap, connections wait in the listen backlog
        // and are served as soon as one closes.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => {
                at_cap = false;
                slot
            }
            Err(_) => {
                if !at_cap {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "HTTP_MAX_CONNECTIONS reached: new connections wait until one closes"
                    );
                    at_cap = true;
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                    () = &mut shutdown => break,
                }
            }
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let phase = Arc::new(Phase::new());
        let service = connection_service(app.clone(), phase.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(Watched::new(stream, phase, limits)), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {},
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("requests still in progress after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
}

/// The router for one connection, telling the connection's reader when a request is being
/// handled (no read deadline: the handler bounds the body) and when it is done (idle again).
fn connection_service(
    app: Router,
    phase: Arc<Phase>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<Response, std::convert::Infallible>> + Send,
> + Clone {
    let app = hyper_util::service::TowerToHyperService::new(app);
    hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let app = app.clone();
        let phase = phase.clone();
        async move {
            phase.enter(Stage::Busy);
            let response = hyper::service::Service::call(&app, request).await;
            phase.enter(Stage::Idle);
            response
        }
    })
}

async fn shutdown_signal() {
    qlik_events::shutdown_signal().await;
    tracing::info!("shutting down");
}

/// Where a connection is in its request cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for a request to begin: `idle_timeout`.
    Idle,
    /// Part of a request's headers arrived: `header_timeout`.
    Head,
    /// A request is being handled (body, publish, answer): the handler's own bounds.
    Busy,
}

/// A connection's stage and since when, shared by its reader and its service.
struct Phase(Mutex<PhaseState>);

struct PhaseState {
    stage: Stage,
    since: Instant,
    /// The reader waiting on the previous stage's deadline: woken to take up the new one.
    reader: Option<std::task::Waker>,
}

impl Phase {
    fn new() -> Self {
        Self(Mutex::new(PhaseState {
            stage: Stage::Idle,
            since: Instant::now(),
            reader: None,
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PhaseState> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn enter(&self, stage: Stage) {
        let reader = {
            let mut phase = self.lock();
            phase.stage = stage;
            phase.since = Instant::now();
            phase.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }

    /// Bytes arrived: an idle connection starts a request, and its header clock starts.
    fn bytes_arrived(&self) {
        let mut phase = self.lock();
        if phase.stage == Stage::Idle {
            phase.stage = Stage::Head;
            phase.since = Instant::now();
        }
    }

    /// The current stage's deadline; `waker` is woken when the stage changes.
    fn deadline(
        &self,
        limits: &HttpLimits,
        waker: Option<&std::task::Waker>,
    ) -> Option<(Stage, Instant)> {
        let mut phase = self.lock();
        if let Some(waker) = waker {
            phase.reader = Some(waker.clone());
        }
        match phase.stage {
            Stage::Idle => Some((Stage::Idle, phase.since + limits.idle_timeout)),
            Stage::Head => Some((Stage::Head, phase.since + limits.header_timeout)),
            Stage::Busy => None,
        }
    }
}

/// What a client that stalled in its headers is told before the connection closes.
const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";

/// A TCP stream whose reads fail once the deadline of its connection's stage has passed, which
/// ends the connection.
struct Watched {
    stream: TcpStream,
    phase: Arc<Phase>,
    limits: HttpLimits,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Watched {
    fn new(stream: TcpStream, phase: Arc<Phase>, limits: HttpLimits) -> Self {
        Self {
            stream,
            phase,
            limits,
            timer: Box::pin(tokio::time::sleep(limits.idle_timeout)),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.phase.bytes_arrived();
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => {}
        }
        let Some((stage, deadline)) = this.phase.deadline(&this.limits, Some(cx.waker())) else {
            return Poll::Pending;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        if this.timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let what = if stage == Stage::Head {
            // Best effort: the connection closes whether or not the client reads it.
            let _ = this.stream.try_write(REQUEST_TIMEOUT);
            "headers did not arrive within HTTP_HEADER_TIMEOUT_SECS"
        } else {
            "idle longer than HTTP_IDLE_TIMEOUT_SECS"
        };
        Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, what)))
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

async fn webhook(State(app): State<AppState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    // Only read a body we may use: a wrong method is refused unread.
    let read = if parts.method != http::Method::POST {
        BodyRead::Complete(bytes::Bytes::new())
    } else {
        read_body(
            &parts.headers,
            body,
            app.relay.policy.max_body_bytes,
            app.body_timeout,
        )
        .await
    };
    let body = match &read {
        BodyRead::Complete(bytes) => Body::Complete(bytes),
        BodyRead::TooLarge { at_least } => Body::TooLarge {
            at_least: *at_least,
        },
        BodyRead::TimedOut => Body::TimedOut,
    };
    let reply = app
        .relay
        .handle(WebhookRequest {
            method: &parts.method,
            headers: &parts.headers,
            body,
        })
        .await;
    // A body not read to its end leaves the connection unusable for another request.
    let close = !matches!(read, BodyRead::Complete(_));
    into_response(reply, close)
}

#[derive(Debug)]
enum BodyRead {
    Complete(bytes::Bytes),
    TooLarge { at_least: usize },
    TimedOut,
}

/// Reads the body within `timeout`. Past `limit` the rest is read and discarded (up to
/// [`DISCARD_LIMIT`]) so the client gets to read the `413`. A body announced over the limit is
/// refused unread when the client waits for `100 Continue` (it has sent nothing yet) or when it
/// is too large to be worth reading.
async fn read_body(
    headers: &http::HeaderMap,
    body: AxumBody,
    limit: usize,
    timeout: Duration,
) -> BodyRead {
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let expects_continue = headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if let Some(at_least) = announced.filter(|&n| n > limit)
        && (expects_continue || at_least > DISCARD_LIMIT)
    {
        return BodyRead::TooLarge { at_least };
    }
    tokio::time::timeout(timeout, collect(body, limit))
        .await
        .unwrap_or(BodyRead::TimedOut)
}

/// A connection that breaks mid-body counts as an empty body: the signature check refuses it.
async fn collect(mut body: AxumBody, limit: usize) -> BodyRead {
    let mut kept = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let data = match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => data,
                Err(_trailers) => continue,
            },
            Err(e) => {
                tracing::debug!(error = %e, "request body could not be read");
                return BodyRead::Complete(bytes::Bytes::new());
            }
        };
        seen = seen.saturating_add(data.len());
        if seen <= limit {
            kept.extend_from_slice(&data);
        } else if seen > DISCARD_LIMIT {
            return BodyRead::TooLarge { at_least: seen };
        }
    }
    if seen > limit {
        BodyRead::TooLarge { at_least: seen }
    } else {
        BodyRead::Complete(kept.freeze())
    }
}

fn into_response(reply: Reply, close: bool) -> Response {
    let mut response = (
        reply.status,
        [(http::header::CONTENT_TYPE, "application/json")],
        reply.body,
    )
        .into_response();
    if close {
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::publisher::PublishError;

    #[test]
    fn health_is_ok_only_while_connected_and_never_shows_the_broker_message() {
        assert_eq!(health(&LinkState::Connected), (StatusCode::OK, "ok"));
        assert_eq!(
            health(&LinkState::Connecting),
            (StatusCode::SERVICE_UNAVAILABLE, "mqtt: connecting")
        );
        let error = PublishError::Connection("I/O: connection refused to 10.0.0.5:8883".into());
        assert_eq!(
            health(&LinkState::Down {
                error: error.clone(),
                refused: None
            }),
            (StatusCode::SERVICE_UNAVAILABLE, "mqtt: broker unreachable")
        );
        assert_eq!(
            health(&LinkState::Down {
                error,
                refused: Some("BadUserNamePassword".into())
            }),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "mqtt: broker refused the connection"
            )
        );
    }

    #[test]
    fn each_stage_has_its_own_deadline() {
        let limits = HttpLimits {
            header_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(3),
            max_connections: 1,
        };
        let phase = Phase::new();
        let (stage, deadline) = phase.deadline(&limits, None).unwrap();
        assert_eq!(stage, Stage::Idle);
        assert!(deadline > Instant::now() + Duration::from_secs(2));
        phase.bytes_arrived();
        let (stage, deadline) = phase.deadline(&limits, None).unwrap();
        assert_eq!(stage, Stage::Head);
        assert!(deadline <= Instant::now() + Duration::from_secs(1));
        phase.enter(Stage::Busy);
        phase.bytes_arrived();
        assert_eq!(
            phase.deadline(&limits, None),
            None,
            "the body is the handler's"
        );
        phase.enter(Stage::Idle);
        assert_eq!(phase.deadline(&limits, None).unwrap().0, Stage::Idle);
    }
}
