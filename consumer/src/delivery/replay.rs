//! `replay`: re-sends parked alerts through their sinks.

use super::dead_letter::{DeadLetter, DeadLetterError, DeadLetterLock};
use super::retry::{self, RetryPolicy};
use crate::sinks::SharedSink;

/// What `replay` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: usize,
    /// Still parked: the sink failed again.
    pub failed: usize,
    /// Still parked: no configured sink has that name (configuration changed since).
    pub unknown_sink: usize,
    /// Files that are not parked alerts; left alone.
    pub unreadable: usize,
}

impl ReplayReport {
    pub fn remaining(&self) -> usize {
        self.failed + self.unknown_sink + self.unreadable
    }
}

/// Re-sends every parked alert (optionally only those of one sink) through its sink, with the
/// same retry policy but no rate limit (the alert was already admitted once). A file is
/// deleted only after its alert was delivered.
///
/// Holding the directory's lock is the caller's proof that nobody else re-sends these files at
/// the same time.
pub async fn replay(
    lock: &DeadLetterLock,
    sinks: &[SharedSink],
    retry: &RetryPolicy,
    only_sink: Option<&str>,
) -> Result<ReplayReport, DeadLetterError> {
    let dead_letter = lock.dead_letter();
    let mut report = ReplayReport::default();
    for path in dead_letter.list()? {
        let mut parked = match DeadLetter::read(&path) {
            Ok(parked) => parked,
            Err(e) => {
                tracing::warn!("{e}; left in place");
                report.unreadable += 1;
                continue;
            }
        };
        if only_sink.is_some_and(|s| s != parked.sink) {
            continue;
        }
        let Some(sink) = sinks.iter().find(|s| s.name() == parked.sink) else {
            tracing::warn!(
                parked = %path.display(),
                "{}: no configured sink named `{}`; left parked",
                parked.alert.describe(),
                parked.sink
            );
            report.unknown_sink += 1;
            continue;
        };
        match retry::send_with_retry(sink.as_ref(), &parked.alert, retry).await {
            Ok(attempts) => {
                DeadLetter::remove(&path)?;
                tracing::info!(
                    sink = %parked.sink,
                    attempts,
                    "{}: parked alert delivered and removed",
                    parked.alert.describe()
                );
                report.delivered += 1;
            }
            Err(failure) => {
                tracing::error!(
                    sink = %parked.sink,
                    parked = %path.display(),
                    "{}: still failing, left parked: {}",
                    parked.alert.describe(),
                    failure.error
                );
                report.failed += 1;
                parked.attempts = parked.attempts.saturating_add(failure.attempts);
                parked.error = failure.error.to_string();
                DeadLetter::update(&path, &parked)?;
            }
        }
    }
    Ok(report)
}
