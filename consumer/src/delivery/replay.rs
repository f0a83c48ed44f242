//! `replay`: re-sends parked alerts through their sinks.

use std::collections::BTreeMap;
use std::time::Duration;

use super::dead_letter::{DeadLetter, DeadLetterError, DeadLetterLock};
use super::retry::{self, Attempted};
use crate::settings::RetryConfig;
use crate::sinks::SharedSink;

/// Temporary files at least this old are taken for leftovers of a crash and removed by
/// [`replay`]: an atomic write takes milliseconds, so a younger one may still be in progress
/// (the running consumer parking an alert).
pub const STALE_TEMP_FILE_AGE: Duration = Duration::from_secs(60);

/// What `replay` did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: usize,
    /// Still parked: the sink failed again.
    pub failed: usize,
    /// Still parked, not tried: an earlier alert of the same sink failed again in this run
    /// after all its retries, so the destination is taken to be still down.
    pub skipped: usize,
    /// Still parked: no configured sink has that name (configuration changed since).
    pub unknown_sink: usize,
    /// Files that are not parked alerts; left alone.
    pub unreadable: usize,
    /// Delivered, but the file could not be removed: the next replay sends the alert again.
    pub not_removed: usize,
    /// Of `failed`: the file could not be rewritten with the new attempt count and error, so it
    /// keeps the old ones.
    pub not_updated: usize,
    /// Temporary files left by a crash, removed.
    pub temp_files_removed: usize,
}

impl ReplayReport {
    /// Parked files still in the directory (those that could not be removed included).
    pub fn remaining(&self) -> usize {
        self.failed + self.skipped + self.unknown_sink + self.unreadable + self.not_removed
    }

    /// Files this run could not remove or rewrite: the directory needs a person's attention
    /// (permissions, a full disk), which another run would not fix.
    pub fn file_errors(&self) -> usize {
        self.not_removed + self.not_updated
    }
}

/// Re-sends every parked alert (optionally only those of one sink) through its sink, with the
/// same retry policy but no rate limit (the alert was already admitted once). A file is
/// deleted only after its alert was delivered.
///
/// Holding the directory's lock is the caller's proof that nobody else re-sends these files at
/// the same time. Once an alert of a sink fails again with a transient error (after every
/// retry), that sink's remaining alerts are left for a later replay rather than retried one by
/// one against a destination that is down; a final error (a rejected recipient) concerns that
/// alert only, and the sink's others are still tried. A file that cannot be removed or rewritten
/// is counted and logged, and the replay goes on. Temporary files left by a crash
/// ([`STALE_TEMP_FILE_AGE`] or older) are removed first.
pub async fn replay(
    lock: &DeadLetterLock,
    sinks: &[SharedSink],
    retry: &RetryConfig,
    only_sink: Option<&str>,
) -> Result<ReplayReport, DeadLetterError> {
    let dead_letter = lock.dead_letter();
    let mut report = ReplayReport {
        temp_files_removed: remove_stale_temp_files(dead_letter),
        ..ReplayReport::default()
    };
    // Sinks that failed again in this run, with how many of their alerts were skipped since.
    let mut still_down: BTreeMap<String, usize> = BTreeMap::new();
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
        if let Some(skipped) = still_down.get_mut(&parked.sink) {
            *skipped += 1;
            report.skipped += 1;
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
        let failure = match retry::send_with_retry(sink.as_ref(), &parked.alert, retry, 0).await {
            Attempted::Delivered { attempts } => Ok(attempts),
            Attempted::Failed(failure) => Err(failure),
            // Asked to slow down: the destination is not taking alerts now.
            Attempted::Throttled {
                attempts, error, ..
            } => Err(retry::Failure { attempts, error }),
        };
        match failure {
            Ok(attempts) => {
                report.delivered += 1;
                match DeadLetter::remove(&path) {
                    Ok(()) => tracing::info!(
                        sink = %parked.sink,
                        attempts,
                        "{}: parked alert delivered and removed",
                        parked.alert.describe()
                    ),
                    Err(e) => {
                        tracing::error!(
                            sink = %parked.sink,
                            attempts,
                            "{}: parked alert delivered, but its file remains, so a later \
                             replay may send it again: {e}",
                            parked.alert.describe()
                        );
                        report.not_removed += 1;
                    }
                }
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
                if failure.error.is_transient() {
                    still_down.insert(parked.sink.clone(), 0);
                }
                parked.attempts = parked.attempts.saturating_add(failure.attempts);
                parked.error = failure.error.to_string();
                if let Err(e) = DeadLetter::update(&path, &parked) {
                    tracing::error!(
                        sink = %parked.sink,
                        "{}: left parked with its earlier attempt count and error: {e}",
                        parked.alert.describe()
                    );
                    report.not_updated += 1;
                }
            }
        }
    }
    for (sink, skipped) in still_down.iter().filter(|(_, skipped)| **skipped > 0) {
        tracing::warn!(
            sink = %sink,
            "{sink} still failing: {skipped} more parked alert(s) left for a later replay"
        );
    }
    Ok(report)
}

/// Removes the temporary files a crash left (old enough not to be a write in progress), each
/// logged, and returns how many.
fn remove_stale_temp_files(dead_letter: &DeadLetter) -> usize {
    let temp_files = match dead_letter.temp_files() {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!("looking for temporary files left by a crash: {e}");
            return 0;
        }
    };
    let mut removed = 0;
    for temp in temp_files.iter().filter(|t| t.age() >= STALE_TEMP_FILE_AGE) {
        match std::fs::remove_file(&temp.path) {
            Ok(()) => {
                removed += 1;
                tracing::warn!(
                    "removed {}, a temporary file left by a crash {}s ago: the file it was \
                     writing is either in place under its final name or was never written, and \
                     then its MQTT message was not acknowledged either",
                    temp.path.display(),
                    temp.age().as_secs()
                );
            }
            Err(e) => tracing::error!(
                "cannot remove {}, a temporary file left by a crash: {e}",
                temp.path.display()
            ),
        }
    }
    removed
}
