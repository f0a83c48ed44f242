//! The running consumer: source → transforms → delivery, one message at a time, each message
//! acknowledged only after it was handled.
//!
//! Messages are handled in arrival order and one at a time: a failed reload is rare, ordering
//! keeps dedupe simple, and the sinks of one alert already run concurrently.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::ConsumerConfig;
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
}

/// What a running consumer reports to an observer.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The broker granted the subscription.
    Subscribed,
    /// A message was handled and acknowledged.
    Handled(Handled),
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
    std::fs::create_dir_all(path).map_err(|e| RunError::StateDir {
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
    tokio::pin!(shutdown);
    loop {
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
        match transforms.handle(&message.topic, &message.payload).await {
            Ok(handled) => {
                crate::metrics::global().handled(&handled);
                if let Err(e) = message.ack().await {
                    // The broker will send it again; dedupe recognizes it.
                    tracing::warn!("{e}");
                }
                if let Some(observer) = &options.observer {
                    let _ = observer.send(RunEvent::Handled(handled));
                }
            }
            Err(e) => {
                // Not even parking worked. Leave the message unacknowledged and stop loudly:
                // the broker keeps it for the next start.
                tracing::error!("{e}; message left unacknowledged, stopping");
                source.stop().await;
                return Err(e.into());
            }
        }
    }
    source.stop().await;
    Ok(())
}
