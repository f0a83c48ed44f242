//! Delivery: the service layers every sink is wrapped in, once — per-app rate limit, retry with
//! backoff, and parking in the dead-letter directory after the last try — plus `replay`.
//!
//! An alert is *handled* when every sink that accepts it has either delivered it, dropped it
//! under its rate limit, or had it parked. Only then may the MQTT message be acknowledged; if
//! even parking fails (disk full), delivery reports an error and the message stays
//! unacknowledged, so the broker sends it again.

pub mod dead_letter;
pub mod parked_message;
pub mod rate_limit;
pub mod replay;
pub mod retry;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::alert::Alert;
use crate::sinks::SharedSink;
pub use dead_letter::{DeadLetter, DeadLetterError, ParkedAlert};
pub use rate_limit::RateLimits;
pub use replay::{ReplayReport, replay};
pub use retry::RetryPolicy;

/// What became of an alert at one sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Delivered {
        attempts: u32,
    },
    /// Dropped: an alert for this app went to this sink less than `rateLimit` ago.
    RateLimited,
    Parked {
        path: PathBuf,
        error: String,
    },
}

#[derive(Debug, thiserror::Error)]
#[error("sink {sink}: delivery failed ({error}) and the alert could not be parked: {park}")]
pub struct DeliveryError {
    pub sink: String,
    pub error: String,
    pub park: DeadLetterError,
}

pub struct Delivery {
    sinks: Vec<SharedSink>,
    retry: RetryPolicy,
    rate_limits: RateLimits,
    dead_letter: DeadLetter,
}

impl Delivery {
    pub fn new(
        sinks: Vec<SharedSink>,
        retry: RetryPolicy,
        rate_limits: RateLimits,
        dead_letter: DeadLetter,
    ) -> Arc<Self> {
        Arc::new(Self {
            sinks,
            retry,
            rate_limits,
            dead_letter,
        })
    }

    pub fn sinks(&self) -> &[SharedSink] {
        &self.sinks
    }

    /// Delivers to every accepting sink at once (a slow Teams does not hold up Slack) and
    /// returns each sink's outcome.
    pub async fn deliver(
        self: &Arc<Self>,
        alert: &Alert,
    ) -> Result<Vec<(String, Outcome)>, DeliveryError> {
        let alert = Arc::new(alert.clone());
        let mut tasks = JoinSet::new();
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
            for (copy, alert) in copies.into_iter().enumerate() {
                let this = Arc::clone(self);
                let sink = Arc::clone(sink);
                tasks.spawn(async move {
                    let name = delivery_name(sink.name(), &alert);
                    let outcome = this.deliver_to(&sink, &alert).await;
                    crate::metrics::global().alert(sink.name(), &alert, &outcome);
                    ((index, copy), name, outcome)
                });
            }
        }
        let mut outcomes = Vec::new();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok((order, name, Ok(outcome))) => outcomes.push((order, name, outcome)),
                Ok((_, _, Err(e))) => failure = Some(e),
                Err(e) => {
                    failure = Some(DeliveryError {
                        sink: "?".into(),
                        error: format!("delivery task ended abnormally: {e}"),
                        park: DeadLetterError::Write {
                            path: self.dead_letter.dir().to_owned(),
                            reason: "not attempted".into(),
                        },
                    })
                }
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        outcomes.sort_by_key(|(order, _, _)| *order);
        Ok(outcomes
            .into_iter()
            .map(|(_, name, outcome)| (name, outcome))
            .collect())
    }

    async fn deliver_to(&self, sink: &SharedSink, alert: &Alert) -> Result<Outcome, DeliveryError> {
        let name = sink.name();
        let app = alert.app_id.as_deref().unwrap_or("unknown");
        // Butler keys email rate limits by app and address (`<appId>|<email>`): one recipient's
        // window does not silence the others.
        let key = match &alert.recipient {
            Some(recipient) => format!("{app}|{}", recipient.to_ascii_lowercase()),
            None => app.to_owned(),
        };
        // The window is checked now and started only once the alert was delivered or parked
        // (below): a consumer killed mid-delivery must find it open when the broker redelivers.
        let window = sink.rate_limit();
        let holder = format!("{}|{}", alert.tenant_id, alert.event_id);
        if !self.rate_limits.is_open(name, &key, window, &holder).await {
            tracing::info!(
                sink = name,
                "{}: not sent, rate limit of {:?} per app{}",
                alert.describe(),
                sink.rate_limit(),
                if alert.recipient.is_some() {
                    " and recipient"
                } else {
                    ""
                }
            );
            return Ok(Outcome::RateLimited);
        }
        match retry::send_with_retry(sink.as_ref(), alert, &self.retry).await {
            Ok(attempts) => {
                self.rate_limits.record(name, &key, window, &holder).await;
                tracing::info!(
                    sink = name,
                    attempts,
                    "{}: alert delivered",
                    alert.describe()
                );
                Ok(Outcome::Delivered { attempts })
            }
            Err(failure) => {
                let error = failure.error.to_string();
                match self
                    .dead_letter
                    .park(name, alert, failure.attempts, &error)
                    .await
                {
                    Ok(path) => {
                        self.rate_limits.record(name, &key, window, &holder).await;
                        tracing::error!(
                            sink = name,
                            attempts = failure.attempts,
                            parked = %path.display(),
                            "{}: alert parked after {} attempt(s); `consumer replay` re-sends it. Last error: {error}",
                            alert.describe(),
                            failure.attempts
                        );
                        Ok(Outcome::Parked { path, error })
                    }
                    Err(park) => Err(DeliveryError {
                        sink: name.to_owned(),
                        error,
                        park,
                    }),
                }
            }
        }
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
