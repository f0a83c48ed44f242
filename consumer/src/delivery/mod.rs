//! Delivery: the service layers every sink is wrapped in, once — per-app rate limit, a queue
//! and worker of its own ([`worker`]), retry with backoff, pauses on `Retry-After`, parking in
//! the dead-letter directory, a circuit breaker and automatic redelivery — plus `replay`.
//!
//! An alert is *handled* when every sink that accepts it has delivered it, dropped it under
//! its rate limit, or holds it durably (parked, or held on disk while delivery goes on). Only
//! then may the MQTT message be acknowledged; if even parking fails (disk full), delivery
//! reports an error and the message stays unacknowledged, so the broker sends it again.

pub mod dead_letter;
mod digests;
pub mod parked_message;
pub mod replay;
pub mod retry;
pub mod schedule;
pub mod worker;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::alert::Alert;
use crate::sinks::SharedSink;
use crate::state::{RateWindow, StateBackend};
pub use dead_letter::{DeadLetter, DeadLetterError, ParkedAlert};
pub use replay::{ReplayReport, replay};
pub use worker::WorkerSettings;
use worker::{Job, Worker};

/// What became of an alert at one sink, when its event was released.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// Dropped: an alert for this app went to this sink less than `rateLimit` ago.
    RateLimited,
    /// In the dead-letter directory after every attempt failed (or the destination is down),
    /// redelivered on the schedule, then by `consumer replay`.
    Parked {
        path: PathBuf,
        error: String,
    },
    /// Not delivered within `redelivery.holdSeconds`: written to disk so the event can be
    /// acknowledged, while the destination's worker keeps trying it.
    Held {
        path: PathBuf,
    },
    /// Folded into the digest of the destination's window ([`crate::digest`]), kept in the
    /// state store until the window closes; delivered with the digest.
    Digested {
        window: String,
    },
}

impl Outcome {
    /// Whether the alert went out or will (so the rate-limit window is used).
    fn uses_window(&self) -> bool {
        !matches!(self, Outcome::RateLimited)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: delivery failed ({error}) and the alert could not be parked: {park}")]
pub struct DeliveryError {
    pub sink: String,
    pub error: String,
    pub park: DeadLetterError,
}

/// Every sink with its own queue and worker.
pub struct Deliveries {
    sinks: Vec<SharedSink>,
    queues: Vec<mpsc::Sender<Job>>,
    store: Arc<dyn StateBackend>,
}

/// Alerts a destination's queue takes before an event waits to hand it one (events in flight
/// are bounded by `concurrency`; this only smooths bursts).
const QUEUE: usize = 256;

impl Deliveries {
    /// Starts one worker per sink; they stop when this is dropped.
    pub fn start(
        sinks: Vec<SharedSink>,
        settings: &WorkerSettings,
    ) -> (Arc<Self>, Vec<JoinHandle<()>>) {
        let mut queues = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for sink in &sinks {
            let (tx, rx) = mpsc::channel(QUEUE);
            queues.push(tx);
            let worker = Worker::new(Arc::clone(sink), rx, settings.clone());
            workers.push(tokio::spawn(worker.run()));
        }
        let closer = digests::Closer {
            sinks: sinks.clone(),
            queues: queues.iter().map(mpsc::Sender::downgrade).collect(),
            store: Arc::clone(&settings.store),
            dead_letter: settings.dead_letter.clone(),
            schedule: settings.schedule.clone(),
            instance: settings.instance.clone(),
        };
        workers.push(tokio::spawn(closer.run()));
        let deliveries = Arc::new(Self {
            sinks,
            queues,
            store: Arc::clone(&settings.store),
        });
        (deliveries, workers)
    }

    pub fn sinks(&self) -> &[SharedSink] {
        &self.sinks
    }

    /// Hands the alert to every accepting sink's queue (a slow Teams does not hold up Slack)
    /// and returns each sink's outcome once each has released it. `holder` is the claim the
    /// alert is handled under (tenant + reload): the rate-limit windows it reserves are its.
    pub async fn deliver(
        &self,
        alert: &Alert,
        holder: &str,
    ) -> Result<Vec<(String, Outcome)>, DeliveryError> {
        let alert = Arc::new(alert.clone());
        let mut waiting = Vec::new();
        let mut outcomes: Vec<(usize, String, Outcome)> = Vec::new();
        for (index, sink) in self.sinks.iter().enumerate() {
            if !sink.accepts(&alert) {
                continue;
            }
            // A sink with recipients gets one delivery per recipient, each rate-limited,
            // retried and parked on its own.
            let copies: Vec<Arc<Alert>> = match sink.recipients(&alert) {
                None => vec![Arc::clone(&alert)],
                Some(recipients) => {
                    if recipients.is_empty() {
                        tracing::info!(
                            sink = sink.name(),
                            "{}: nobody to send it to (no recipients, or the app is not tagged \
                             and the owner is not to be alerted)",
                            alert.describe()
                        );
                    }
                    recipients
                        .iter()
                        .map(|r| Arc::new(alert.for_recipient(r)))
                        .collect()
                }
            };
            for copy in copies {
                let name = delivery_name(sink.name(), &copy);
                let key = rate_key(&copy);
                // Butler's `rateLimit` is per app; a notice is about no app, and a second one
                // (a webhook missing, then disabled) must not be silenced by the first.
                let window = if copy.notice.is_some() {
                    std::time::Duration::ZERO
                } else {
                    sink.rate_limit()
                };
                if !self
                    .store
                    .window_open(RateWindow::new(sink.name(), &key, window, holder))
                    .await
                {
                    tracing::info!(
                        sink = sink.name(),
                        "{}: not sent, rate limit of {window:?} per app{}",
                        copy.describe(),
                        if copy.recipient.is_some() {
                            " and recipient"
                        } else {
                            ""
                        }
                    );
                    crate::metrics::global().alert(sink.name(), "rate_limited", None);
                    outcomes.push((index, name, Outcome::RateLimited));
                    continue;
                }
                if let Some(digest) = digests::fold(self.store.as_ref(), sink, &name, &copy).await {
                    // Per-app rate limits apply before grouping: the window is used.
                    self.store
                        .window_used(RateWindow::new(sink.name(), &key, window, holder))
                        .await;
                    crate::metrics::global().alert(sink.name(), "digested", None);
                    outcomes.push((index, name, Outcome::Digested { window: digest }));
                    continue;
                }
                let (done, released) = oneshot::channel();
                let job = Job {
                    alert: copy,
                    done,
                    held: None,
                };
                if self.queues[index].send(job).await.is_err() {
                    return Err(stopped(sink.name()));
                }
                waiting.push((index, name, key, window, released));
            }
        }
        for (index, name, key, window, released) in waiting {
            let sink = &self.sinks[index];
            let outcome = released.await.map_err(|_| stopped(sink.name()))??;
            if outcome.uses_window() {
                self.store
                    .window_used(RateWindow::new(sink.name(), &key, window, holder))
                    .await;
            }
            outcomes.push((index, name, outcome));
        }
        outcomes.sort_by_key(|(index, _, _)| *index);
        Ok(outcomes
            .into_iter()
            .map(|(_, name, outcome)| (name, outcome))
            .collect())
    }
}

fn stopped(sink: &str) -> DeliveryError {
    DeliveryError {
        sink: sink.to_owned(),
        error: "the destination's worker has stopped".to_owned(),
        park: DeadLetterError::Write {
            path: PathBuf::new(),
            reason: "not attempted".to_owned(),
        },
    }
}

/// Butler keys email rate limits by app and address (`<appId>|<email>`): one recipient's window
/// does not silence the others.
fn rate_key(alert: &Alert) -> String {
    let app = alert.app_id.as_deref().unwrap_or("unknown");
    match &alert.recipient {
        Some(recipient) => format!("{app}|{}", recipient.to_ascii_lowercase()),
        None => app.to_owned(),
    }
}

/// The name an outcome is reported under: the sink's, plus the recipient for a sink that sends
/// each recipient a copy (`email:<tenantId>/ops@example.com`).
pub fn delivery_name(sink: &str, alert: &Alert) -> String {
    match &alert.recipient {
        Some(recipient) => format!("{sink}/{recipient}"),
        None => sink.to_owned(),
    }
}
