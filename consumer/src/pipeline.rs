//! The running consumer: source → transforms → delivery, one message at a time, each message
//! acknowledged only after it was handled.
//!
//! Messages are handled in arrival order and one at a time: a failed reload is rare, ordering
//! keeps dedupe and rate limits exact, and the sinks of one alert already run concurrently.
//! Each message's time is bounded (`enrichment.deadlineSeconds`, then delivery's retries).
//!
//! Isolation: a panic or an error while handling one message does not end the process. The
//! message is parked raw with the reason ([`crate::delivery::parked_message`]), acknowledged,
//! and the next one is handled. Only when even that parking fails (disk full) does the consumer
//! stop with the message unacknowledged, so the broker keeps it.
//!
//! Shutdown (SIGTERM): no new message is taken; the one in hand gets `shutdownGraceSeconds` to
//! finish. After that it is left unacknowledged — with a persistent session the broker sends it
//! again on the next start, and dedupe keeps an alert that already went out from going out
//! twice — or, without a persistent session (the broker would forget it), parked raw.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::config::ConsumerConfig;
use crate::delivery::parked_message::{ParkMessageError, ParkedMessage, park_message};
use crate::delivery::{DeadLetter, Delivery, DeliveryError, RetryPolicy};
use crate::metrics::server::{self as metrics_server, Probe, ServeError};
use crate::sinks::{self, BuildError, SharedSink};
use crate::source::{Received, Source, SourceConfig, SourceError};
use crate::state::{StateStore, StoreError};
use crate::transforms::enrich::Enricher;
use crate::transforms::{Handled, Transforms};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sinks(#[from] BuildError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("tenant API client: {0}")]
    Enrich(#[from] crate::enrich::EnrichError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Metrics(#[from] ServeError),
    #[error("state directory {path}: {reason}")]
    StateDir { path: String, reason: String },
    #[error("{error}; and {park}; message left unacknowledged, stopping")]
    Park {
        error: String,
        park: ParkMessageError,
    },
}

/// What a running consumer reports to an observer.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The broker granted the subscription.
    Subscribed,
    /// A message was handled and acknowledged.
    Handled(Handled),
    /// Handling a message panicked or failed: it was parked raw and acknowledged.
    Parked { topic: String, reason: String },
}

/// Hooks for embedding and tests.
#[derive(Default)]
pub struct RunOptions {
    /// Told when subscribed and about every message after it was acknowledged.
    pub observer: Option<mpsc::UnboundedSender<RunEvent>>,
    /// Overrides the reconnect backoff (tests use short pauses).
    pub source: Option<SourceConfig>,
}

/// Everything delivery needs, built from the configuration; `replay` uses the same.
pub fn delivery_for(config: &ConsumerConfig) -> Result<Arc<Delivery>, RunError> {
    delivery_with(config, &StateStore::open(config)?)
}

/// [`delivery_for`] with rate-limit windows in `store`.
pub fn delivery_with(
    config: &ConsumerConfig,
    store: &StateStore,
) -> Result<Arc<Delivery>, RunError> {
    let sinks: Vec<SharedSink> = sinks::build(config)?;
    Ok(Delivery::new(
        sinks,
        RetryPolicy::from(&config.retry),
        store.rate_limits(config),
        DeadLetter::new(&config.dead_letter_dir),
    ))
}

fn ensure_dir(path: &std::path::Path) -> Result<(), RunError> {
    crate::state::create_private_dir(path).map_err(|e| RunError::StateDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// Runs until `shutdown` completes (then disconnects cleanly) or a fatal error.
pub async fn run(
    config: ConsumerConfig,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<(), RunError> {
    ensure_dir(&config.state_dir)?;
    ensure_dir(&config.dead_letter_dir)?;
    let config = Arc::new(config);
    let store = StateStore::open(&config)?;
    let delivery = delivery_with(&config, &store)?;
    let names: Vec<&str> = delivery.sinks().iter().map(|s| s.name()).collect();
    let claims = store.claims(&config);
    tracing::info!(
        sinks = %names.join(", "),
        state_dir = %config.state_dir.display(),
        state_store = store.redis().map_or("files", |r| r.display()),
        dead_letter_dir = %config.dead_letter_dir.display(),
        remembered_events = claims.remembered(),
        "consumer starting"
    );
    let _metrics = match config.ha.metrics_listen {
        Some(addr) => Some(
            metrics_server::start(
                addr,
                Probe {
                    store: store.redis().cloned(),
                    dead_letter_dir: config.dead_letter_dir.clone(),
                },
            )
            .await?,
        ),
        None => None,
    };
    let source_config = options
        .source
        .unwrap_or_else(|| SourceConfig::from_config(&config));
    tracing::info!(
        broker = %source_config.broker.display_url(),
        client_id = %source_config.broker.client_id,
        filter = %source_config.filter,
        persistent_session = !config.broker.clean_session,
        "subscribing"
    );
    let enricher = Enricher::new(&config)?;
    let mut transforms = Transforms::new(Arc::clone(&config), claims, enricher, delivery);
    let mut source = Source::start(source_config)?;
    let persistent = !config.broker.clean_session;
    tokio::pin!(shutdown);
    let mut stopping = false;
    loop {
        if stopping {
            break;
        }
        let next = tokio::select! {
            next = source.next() => next,
            () = &mut shutdown => {
                tracing::info!("shutting down");
                break;
            }
        };
        let message = match next {
            Some(Ok(Received::Message(message))) => message,
            Some(Ok(Received::Subscribed)) => {
                if let Some(observer) = &options.observer {
                    let _ = observer.send(RunEvent::Subscribed);
                }
                continue;
            }
            Some(Err(e)) => {
                source.stop().await;
                return Err(e.into());
            }
            None => break,
        };
        // Copies (the payload's is a reference count), so the message itself stays free to be
        // acknowledged while the handling future is still around.
        let (topic, payload) = (message.topic.clone(), message.payload.clone());
        let handling = CatchUnwind(Box::pin(transforms.handle(&topic, &payload)));
        tokio::pin!(handling);
        let first = tokio::select! {
            result = &mut handling => Some(result),
            () = &mut shutdown => None,
        };
        let result = match first {
            Some(result) => Some(result),
            None => {
                stopping = true;
                tracing::info!(
                    grace = ?config.shutdown_grace,
                    "shutting down: finishing the message in hand"
                );
                tokio::time::timeout(config.shutdown_grace, &mut handling)
                    .await
                    .ok()
            }
        };
        let reason = match result {
            Some(Ok(Ok(handled))) => {
                crate::metrics::global().handled(&handled);
                if let Err(e) = message.ack().await {
                    // The broker will send it again; dedupe recognizes it.
                    tracing::warn!("{e}");
                }
                if let Some(observer) = &options.observer {
                    let _ = observer.send(RunEvent::Handled(handled));
                }
                continue;
            }
            Some(Ok(Err(e))) => format!("not handled: {e}"),
            Some(Err(panic)) => format!("panic while handling: {}", panic_text(&*panic)),
            None if persistent => {
                tracing::warn!(
                    topic = %message.topic,
                    "not finished within shutdownGraceSeconds; left unacknowledged, the broker \
                     sends it again on the next start"
                );
                break;
            }
            None => "not finished within shutdownGraceSeconds before shutdown, and the \
                     session is not persistent"
                .to_owned(),
        };
        let parked = ParkedMessage::new(&message.topic, &message.payload, &reason);
        match park_message(&config.dead_letter_dir, &parked).await {
            Ok(path) => {
                crate::metrics::global()
                    .event(tenant_of_topic(&config, &message.topic), "parked-raw");
                tracing::error!(
                    topic = %message.topic,
                    parked = %path.display(),
                    "message {reason}; parked raw and acknowledged, going on with the next"
                );
                if let Err(e) = message.ack().await {
                    tracing::warn!("{e}");
                }
                if let Some(observer) = &options.observer {
                    let _ = observer.send(RunEvent::Parked {
                        topic: parked.topic,
                        reason,
                    });
                }
            }
            Err(park) => {
                // Not even parking worked (disk full?). Leave the message unacknowledged and
                // stop loudly: the broker keeps it for the next start.
                tracing::error!("message {reason}; {park}; left unacknowledged, stopping");
                source.stop().await;
                return Err(RunError::Park {
                    error: reason,
                    park,
                });
            }
        }
    }
    source.stop().await;
    Ok(())
}

/// A future that turns a panic while polling it into an `Err` with the panic's payload, so one
/// message's panic ends that message, not the consumer. Boxed, so it needs no unsafe pinning.
struct CatchUnwind<F>(Pin<Box<F>>);

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The metrics label of a raw message: its topic's last level when that is a configured
/// tenant (Butler's and the relay's default topics end with the tenant id), else `unknown`,
/// so an arbitrary publisher cannot mint label values.
fn tenant_of_topic<'a>(config: &'a ConsumerConfig, topic: &str) -> &'a str {
    let last = topic.rsplit('/').next().unwrap_or_default();
    config
        .tenants
        .iter()
        .find(|t| t.id == last)
        .map_or("unknown", |t| t.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_while_handling_ends_that_future_not_the_task() {
        let panicking = CatchUnwind(Box::pin(async {
            tokio::task::yield_now().await;
            let values: Vec<u64> = Vec::new();
            values[usize::from(values.is_empty())]
        }));
        let err = panicking.await.expect_err("the panic is caught");
        assert!(
            panic_text(&*err).contains("index out of bounds"),
            "{}",
            panic_text(&*err)
        );
        let fine = CatchUnwind(Box::pin(async { 7 })).await;
        assert_eq!(fine.ok(), Some(7));
        assert_eq!(panic_text(&String::from("owned")), "owned");
    }
}
