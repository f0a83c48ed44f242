//! Digest windows around every sink that has digest settings: [`fold`] keeps an alert for its
//! destination's digest (in the state store, so several consumers share one window), and
//! [`Closer`] turns each window that is up into digest parts, held on disk and handed to the
//! destination's worker, which delivers them like alerts.
//!
//! Nothing is lost on the way: a folded alert is in the store before its event is
//! acknowledged; a closed window's parts are written to the dead-letter directory (as held
//! alerts) before the window is forgotten; an instance that dies in between leaves the window
//! to the next one that finds it due (a lease keeps two from making it at once).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::dead_letter::{DeadLetter, ParkedAlert};
use super::worker::Job;
use crate::alert::Alert;
use crate::digest::{Digest, DigestEntry, split};
use crate::sinks::SharedSink;
use crate::state::{DueDigest, Folding, StateBackend};

/// How often windows are looked at: a digest goes out at most this long after its window.
const TICK: Duration = Duration::from_secs(1);
/// Longer than making and holding one digest takes; short enough that a dead instance's
/// window is taken over soon.
const LEASE: Duration = Duration::from_secs(120);

/// Keeps `alert` for the digest of its destination's window when the destination already got
/// `afterAlerts` alerts in it; `None` when it is to be sent as it is.
pub(super) async fn fold(
    store: &dyn StateBackend,
    sink: &SharedSink,
    destination: &str,
    alert: &Alert,
) -> Option<String> {
    let settings = sink.digest()?;
    // A notice is not a failed reload: as a digest entry it would be an app without a name,
    // and it must reach people during a storm, not wait for the window to close. It does not
    // count towards `afterAlerts` either.
    if alert.digest.is_some() || alert.notice.is_some() {
        return None;
    }
    let entry = match serde_json::to_string(&alert.digest_entry()) {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!(
                sink = sink.name(),
                "digest entry does not serialize ({e}); sent as it is"
            );
            return None;
        }
    };
    match store.digest_fold(destination, settings, &entry).await {
        Folding::Single => None,
        Folding::Folded { window } => {
            tracing::info!(
                sink = sink.name(),
                destination,
                window = window.as_str(),
                "{}: more than {} alerts to this destination within {}s; folded into the digest \
                 of window {window}, sent when the window closes",
                alert.describe(),
                settings.after_alerts,
                settings.window.as_secs()
            );
            Some(window)
        }
    }
}

/// Makes the digests of windows that are up and queues them at their destinations.
pub(super) struct Closer {
    pub sinks: Vec<SharedSink>,
    /// Weak, so the workers stop when [`super::Deliveries`] is dropped, as without digests.
    pub queues: Vec<mpsc::WeakSender<Job>>,
    pub store: Arc<dyn StateBackend>,
    pub dead_letter: DeadLetter,
    pub schedule: Vec<Duration>,
    pub instance: String,
}

impl Closer {
    /// Runs until the queues close (the consumer stops).
    pub(super) async fn run(self) {
        if !self.sinks.iter().any(|s| s.digest().is_some()) {
            return;
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.queues.iter().all(|q| q.upgrade().is_none()) {
                return;
            }
            for due in self.store.digests_due().await {
                self.close(&due).await;
            }
        }
    }

    /// The sink a destination belongs to (its name, or its name plus `/recipient`), with the
    /// recipient.
    fn sink_of(&self, destination: &str) -> Option<(usize, Option<String>)> {
        self.sinks
            .iter()
            .enumerate()
            .filter_map(|(index, sink)| {
                let name = sink.name();
                if destination == name {
                    Some((index, name.len(), None))
                } else {
                    let recipient = destination.strip_prefix(name)?.strip_prefix('/')?;
                    Some((index, name.len(), Some(recipient.to_owned())))
                }
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(index, _, recipient)| (index, recipient))
    }

    async fn close(&self, due: &DueDigest) {
        let Some((index, recipient)) = self.sink_of(&due.destination) else {
            // Another instance with this destination in its configuration makes it.
            tracing::debug!(
                destination = due.destination.as_str(),
                "a digest is due for a destination this instance does not have"
            );
            return;
        };
        let lease = format!("digest:{}:{}", due.destination, due.window);
        if !self.store.lease(&lease, &self.instance, LEASE).await {
            return;
        }
        let sink = &self.sinks[index];
        let name = sink.name().to_owned();
        let entries: Vec<DigestEntry> = self
            .store
            .digest_entries(&due.destination, &due.window)
            .await
            .iter()
            .filter_map(|raw| match serde_json::from_str(raw) {
                Ok(entry) => Some(entry),
                Err(e) => {
                    tracing::error!(
                        sink = name.as_str(),
                        "a digest entry is unreadable ({e}); left out"
                    );
                    None
                }
            })
            .collect();
        if entries.is_empty() {
            self.store.digest_clear(&due.destination, &due.window).await;
            self.store.unlease(&lease, &self.instance).await;
            return;
        }
        let tenant = tenant_of(&entries);
        let parts = split(
            &due.window,
            &rfc3339_ms(due.start_ms),
            &rfc3339_ms(due.end_ms),
            entries,
            |d: &Digest| sink.digest_fits(d),
        );
        let total = parts.first().map_or(0, |p| p.total);
        let count = parts.len();
        let mut jobs = Vec::with_capacity(count);
        for part in parts {
            let description = part.describe();
            let alert = Alert::for_digest(&tenant, recipient.as_deref(), part);
            let held = ParkedAlert::held(
                &name,
                &alert,
                0,
                "digest: held on disk while its destination's worker delivers it",
                &self.schedule,
            );
            match self.dead_letter.write(&held).await {
                Ok(path) => {
                    tracing::info!(
                        sink = name.as_str(),
                        destination = due.destination.as_str(),
                        held = %path.display(),
                        "{description}: made for {:?}",
                        due.destination
                    );
                    jobs.push((alert, path));
                }
                Err(e) => {
                    // The window stays in the store: the next tick makes it again.
                    tracing::error!(
                        sink = name.as_str(),
                        "digest of window {} cannot be held on disk ({e}); tried again",
                        due.window
                    );
                    self.store.unlease(&lease, &self.instance).await;
                    return;
                }
            }
        }
        self.store.digest_clear(&due.destination, &due.window).await;
        self.store.unlease(&lease, &self.instance).await;
        crate::metrics::global().digest(&name, total);
        tracing::warn!(
            sink = name.as_str(),
            destination = due.destination.as_str(),
            "digest made for window {}: {total} alerts in {count} message(s) to {:?}",
            due.window,
            due.destination
        );
        for (alert, path) in jobs {
            // Nobody waits for a digest's outcome: the worker logs and counts it, and it is
            // on disk until delivered.
            let (done, _) = oneshot::channel();
            let job = Job {
                alert: Arc::new(alert),
                done,
                held: Some(path),
            };
            // Stopping (no queue, or it closed): the held file is redelivered at the next start.
            let Some(queue) = self.queues[index].upgrade() else {
                return;
            };
            if queue.send(job).await.is_err() {
                return;
            }
        }
    }
}

/// The tenant a digest is about: its entries' tenant, or `*` for a destination that gets
/// several tenants' alerts.
fn tenant_of(entries: &[DigestEntry]) -> String {
    let first = entries.first().map(|e| e.tenant_id.as_str()).unwrap_or("*");
    if entries.iter().all(|e| e.tenant_id == first) {
        first.to_owned()
    } else {
        "*".to_owned()
    }
}

fn rfc3339_ms(ms: u64) -> String {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::alert::Notice;
    use crate::digest::DigestSettings;
    use crate::sinks::{Sink, SinkError};
    use crate::state::LocalStore;

    /// A destination that folds from its first alert on.
    struct Folding0;

    impl Sink for Folding0 {
        fn name(&self) -> &str {
            "folding"
        }

        fn digest(&self) -> Option<DigestSettings> {
            Some(DigestSettings {
                after_alerts: 0,
                window: Duration::from_secs(60),
            })
        }

        async fn send(&self, _alert: &Alert) -> Result<(), SinkError> {
            Ok(())
        }

        fn preview(&self, _alert: &Alert) -> Result<crate::sinks::Preview, SinkError> {
            Ok(crate::sinks::Preview::Nothing("test sink".into()))
        }
    }

    #[tokio::test]
    async fn a_notice_is_never_folded_into_a_digest() {
        let store = LocalStore::memory(Duration::from_secs(3600));
        let sink: SharedSink = Arc::new(Folding0);
        let notice = Alert::for_notice(
            "t1",
            "watchdog-1",
            Notice {
                title: "Qlik disabled the webhook to the relay".into(),
                text: "reason".into(),
            },
        );
        assert_eq!(fold(&store, &sink, "folding", &notice).await, None);
        // The same destination folds a reload alert: the notice was kept out by being one.
        let mut reload = notice.clone();
        reload.notice = None;
        assert!(fold(&store, &sink, "folding", &reload).await.is_some());
    }
}
