//! Retry with capped exponential backoff, the same for every sink.

use std::time::Duration;

use crate::alert::Alert;
use crate::settings::RetryConfig;
use crate::sinks::{DynSink, SinkError};

/// The retry policy is `consumer.retry` itself (declared once, in [`crate::settings`]).
impl RetryConfig {
    /// The pause after failed attempt `attempt` (1-based): initial, 2×, 4×, … capped.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_backoff
            .saturating_mul(factor)
            .min(self.max_backoff)
    }
}

/// How the last try of a sink ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub attempts: u32,
    pub error: SinkError,
}

/// How a run of attempts ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempted {
    Delivered {
        attempts: u32,
    },
    /// The destination asked for a pause (`429` + `Retry-After`): the caller pauses the whole
    /// destination and tries again; `attempts` counts the failed ones made before, not this.
    Throttled {
        attempts: u32,
        retry_after: Duration,
        error: SinkError,
    },
    Failed(Failure),
}

/// Sends until the sink accepts, a final error, a request to pause, or the attempts run out.
/// `made` attempts were already made for this alert (before a pause).
pub async fn send_with_retry(
    sink: &dyn DynSink,
    alert: &Alert,
    policy: &RetryConfig,
    made: u32,
) -> Attempted {
    let mut attempt = made.saturating_add(1);
    loop {
        match sink.send_boxed(alert).await {
            Ok(()) => return Attempted::Delivered { attempts: attempt },
            Err(SinkError::Throttled {
                message,
                retry_after,
            }) => {
                return Attempted::Throttled {
                    attempts: attempt - 1,
                    retry_after,
                    error: SinkError::Throttled {
                        message,
                        retry_after,
                    },
                };
            }
            Err(error) if error.is_transient() && attempt < policy.max_attempts => {
                let pause = policy.backoff(attempt);
                tracing::info!(
                    sink = sink.name(),
                    attempt,
                    max_attempts = policy.max_attempts,
                    "{}: delivery failed, retrying in {pause:?}: {error}",
                    alert.describe()
                );
                tokio::time::sleep(pause).await;
                attempt += 1;
            }
            Err(error) => {
                return Attempted::Failed(Failure {
                    attempts: attempt,
                    error,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        // From the defaults, so a new `retry` key does not touch this test.
        let p = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..RetryConfig::default()
        };
        let got: Vec<u128> = (1..=5).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 500, 500]);
        assert_eq!(p.backoff(100), Duration::from_millis(500));
    }
}
