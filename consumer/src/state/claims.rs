//! Which instance handles an event, and whether it was handled already: the one decision point
//! the pipeline asks before building an alert ([`Claims::begin`]) and tells after the alert was
//! delivered or is held durably ([`Claims::finish`]). The same protocol over every
//! [`StateBackend`]:
//!
//! - The first to claim a key handles it; with a shared store it renews its lease while it
//!   works. Everyone else (another instance, or a second event about the same reload in this
//!   one) waits for `done` before acknowledging their copy, and takes the event over when the
//!   key is freed: released by a holder whose handling failed, panicked or was cut off at
//!   shutdown, or expired because the holder died.
//! - A claim dropped without [`Claims::finish`] is released at once, so nobody waits out a full
//!   lease for an event nobody handles (a redelivered copy on this very consumer included).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::backend::{ClaimState, StateBackend};

/// What [`Claims::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// Handle the event, then pass the claim to [`Claims::finish`].
    Handle(Claim),
    /// Already handled (here or by another instance): acknowledge and drop.
    Duplicate,
}

/// An event this instance is handling.
pub struct Claim {
    key: String,
    token: String,
    store: Arc<dyn StateBackend>,
    renewal: Option<JoinHandle<()>>,
    finished: bool,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim").field("key", &self.key).finish()
    }
}

impl Claim {
    /// The claimed key (tenant + reload, or tenant + event): also the holder of the rate-limit
    /// windows its alert reserves, so an instance that takes the event over may use them.
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        if self.finished {
            return;
        }
        // Handling failed, panicked or was cut off: free the key now rather than at the end
        // of the lease. Outside a runtime (process exit) the lease expires by itself.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, key, token) = (
                Arc::clone(&self.store),
                std::mem::take(&mut self.key),
                std::mem::take(&mut self.token),
            );
            runtime.spawn(async move {
                store.release(&key, &token).await;
                tracing::debug!(event = %key, "claim released without being done");
            });
        }
    }
}

pub struct Claims {
    store: Arc<dyn StateBackend>,
    instance: String,
    lease: Duration,
    retention: Duration,
    /// How often a waiting handler looks whether the holder finished.
    poll: Duration,
}

static NONCE: AtomicU64 = AtomicU64::new(0);

impl Claims {
    pub fn new(
        store: Arc<dyn StateBackend>,
        instance: &str,
        lease: Duration,
        retention: Duration,
    ) -> Self {
        let poll = if store.shared() {
            (lease / 20).clamp(Duration::from_millis(20), Duration::from_millis(500))
        } else {
            // Only this process can hold a local claim: the holder is never far away.
            Duration::from_millis(10)
        };
        Self {
            store,
            instance: instance.to_owned(),
            lease,
            retention,
            poll,
        }
    }

    /// A claim token unique per instance, process and claim: `claim:<clientId>:<pid>:<n>`.
    fn token(&self) -> String {
        format!(
            "claim:{}:{}:{}",
            self.instance,
            std::process::id(),
            NONCE.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Whether to handle an event under this key. May wait for another holder; never fails (an
    /// unreachable store is retried by the backend).
    pub async fn begin(&self, key: &str) -> Begin {
        let token = self.token();
        let mut waited_for: Option<String> = None;
        loop {
            match self.store.claim(key, &token, self.lease).await {
                ClaimState::Mine => {
                    if let Some(holder) = waited_for {
                        tracing::info!(
                            event = key,
                            holder = %holder,
                            "the holder of this event gave it up or stopped renewing its lease; taking it over"
                        );
                    }
                    return Begin::Handle(self.claim(key, token));
                }
                ClaimState::Done => return Begin::Duplicate,
                ClaimState::HeldElsewhere(holder) => {
                    if waited_for.is_none() {
                        tracing::info!(
                            event = key,
                            holder = %holder,
                            "this event (or its reload) is being handled; waiting for it before acknowledging"
                        );
                    }
                    waited_for = Some(holder);
                    // Wait until done or the key is free (released, or the lease expired),
                    // then decide again.
                    loop {
                        tokio::time::sleep(self.poll).await;
                        match self.store.state(key).await.as_deref() {
                            Some("done") => return Begin::Duplicate,
                            Some(_) => continue,
                            None => break,
                        }
                    }
                }
            }
        }
    }

    fn claim(&self, key: &str, token: String) -> Claim {
        let renewal = self.store.shared().then(|| {
            let store = Arc::clone(&self.store);
            let lease = self.lease;
            let (event, mine) = (key.to_owned(), token.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(lease / 3).await;
                    if !store.renew(&event, &mine, lease).await {
                        tracing::warn!(
                            event = %event,
                            "lost the claim on this event while handling it (lease expired, e.g. \
                             during a store outage); another instance may alert it too"
                        );
                        return;
                    }
                }
            })
        });
        Claim {
            key: key.to_owned(),
            token,
            store: Arc::clone(&self.store),
            renewal,
            finished: false,
        }
    }

    /// The event's alert was delivered or is held durably: mark it done and remember the
    /// `also` keys (e.g. the event id beside a reload's claim), so no instance alerts it again.
    pub async fn finish(&self, mut claim: Claim, also: &[String]) {
        if let Some(renewal) = claim.renewal.take() {
            renewal.abort();
        }
        claim.finished = true;
        let previous = self.store.done(&claim.key, also, self.retention).await;
        if previous.as_deref() != Some(claim.token.as_str()) && self.store.shared() {
            // Never silent: the alert went out here, and the group's memory says another
            // instance held (or finished) the event meanwhile — it may have alerted too.
            crate::metrics::global().claim_lost();
            tracing::warn!(
                event = %claim.key,
                found = previous.as_deref().unwrap_or("nothing (store restarted or lease expired)"),
                "claim lost before the event was marked done; a second alert for it is possible"
            );
        }
    }

    /// A key remembered beside a claim (e.g. the event id of a reload's alert) already?
    pub async fn seen(&self, key: &str) -> bool {
        self.store.seen(key).await
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
