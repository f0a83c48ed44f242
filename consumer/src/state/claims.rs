//! Which instance handles an event, and whether it was handled already: the one decision point
//! the pipeline asks before building an alert ([`Claims::begin`]) and tells after the alert was
//! delivered or parked ([`Claims::finish`]).
//!
//! - File store (one instance): today's dedupe memory in the state directory.
//! - Redis store (several instances): an atomic claim with a lease. With plain subscriptions
//!   every instance receives every event; the first to claim handles it, renewing its lease
//!   while it works, and marks it `done`. The others wait for `done` before acknowledging
//!   (so a message is never acknowledged by an instance while the one handling it might still
//!   die), and take the event over when the lease expires without `done` — the holder died.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::task::JoinHandle;

use super::redis_store::{ClaimState, RedisStore};
use crate::transforms::dedupe::Dedupe;

/// What [`Claims::begin`] decided.
#[derive(Debug)]
pub enum Begin {
    /// Handle the event, then pass the claim to [`Claims::finish`].
    Handle(Claim),
    /// Already handled (here or by another instance): acknowledge and drop.
    Duplicate,
}

/// An event this instance is handling. Dropping it without [`Claims::finish`] (delivery
/// failed, process ends) stops the lease renewal: another instance takes the event over once
/// the lease expires.
#[derive(Debug)]
pub struct Claim {
    key: String,
    token: Option<String>,
    renewal: Option<JoinHandle<()>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

/// Shared claims in Redis.
pub struct SharedClaims {
    store: RedisStore,
    instance: String,
    lease: Duration,
    retention: Duration,
    /// How often a waiting instance looks whether the holder finished.
    poll: Duration,
}

pub enum Claims {
    File(Dedupe),
    Shared(SharedClaims),
}

static NONCE: AtomicU64 = AtomicU64::new(0);

/// A claim token unique per instance, process and event: `<clientId>:<pid>:<n>`.
fn token(instance: &str) -> String {
    format!(
        "claim:{instance}:{}:{}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    )
}

impl SharedClaims {
    pub fn new(store: RedisStore, instance: &str, lease: Duration, retention: Duration) -> Self {
        Self {
            store,
            instance: instance.to_owned(),
            lease,
            retention,
            poll: (lease / 20).clamp(Duration::from_millis(20), Duration::from_millis(500)),
        }
    }

    async fn begin(&self, key: &str) -> Begin {
        let token = token(&self.instance);
        let mut waited_for: Option<String> = None;
        loop {
            match self.store.claim(key, &token, self.lease).await {
                ClaimState::Mine => {
                    if let Some(holder) = waited_for {
                        tracing::warn!(
                            event = key,
                            holder = %holder,
                            "the instance handling this event stopped renewing its lease; taking it over"
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
                            "another instance is handling this event; waiting for it before acknowledging"
                        );
                    }
                    waited_for = Some(holder);
                    // Wait until done or the key is gone (lease expired), then decide again.
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
        let store = self.store.clone();
        let lease = self.lease;
        let (event, mine) = (key.to_owned(), token.clone());
        let renewal = tokio::spawn(async move {
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
        });
        Claim {
            key: key.to_owned(),
            token: Some(token),
            renewal: Some(renewal),
        }
    }

    async fn finish(&self, mut claim: Claim) {
        if let Some(renewal) = claim.renewal.take() {
            renewal.abort();
        }
        let previous = self.store.done(&claim.key, self.retention).await;
        let mine = claim.token.as_deref();
        if previous.as_deref() != mine {
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
}

impl Claims {
    /// Whether to handle an event under this dedupe key (tenant + event id). With the Redis store
    /// this may wait for another instance; it never fails (an unreachable store is retried).
    pub async fn begin(&mut self, key: &str) -> Begin {
        match self {
            Claims::File(dedupe) => {
                if dedupe.seen(key) {
                    Begin::Duplicate
                } else {
                    Begin::Handle(Claim {
                        key: key.to_owned(),
                        token: None,
                        renewal: None,
                    })
                }
            }
            Claims::Shared(shared) => shared.begin(key).await,
        }
    }

    /// The event was delivered or parked: remember it, and the `also` keys (e.g. the event id
    /// beside a reload's claim), so no instance alerts it again.
    pub async fn finish(&mut self, claim: Claim, also: &[String]) {
        match self {
            Claims::File(dedupe) => {
                let keys: Vec<&str> = std::iter::once(claim.key.as_str())
                    .chain(also.iter().map(String::as_str))
                    .collect();
                // One save for all keys: the acknowledgement waits for it.
                if let Err(e) = dedupe.remember_all(&keys).await {
                    // The alert went out; failing here would only send it again.
                    tracing::error!("{e}; a redelivery of this event would alert again");
                }
            }
            Claims::Shared(shared) => {
                for key in also {
                    shared.store.remember(key, shared.retention).await;
                }
                shared.finish(claim).await;
            }
        }
    }

    /// A key remembered beside a claim (e.g. the event id of a reload's alert) already?
    pub async fn seen(&self, key: &str) -> bool {
        match self {
            Claims::File(dedupe) => dedupe.seen(key),
            Claims::Shared(shared) => shared.store.seen(key).await,
        }
    }

    /// Events remembered locally (file store), for the start-up log.
    pub fn remembered(&self) -> Option<usize> {
        match self {
            Claims::File(dedupe) => Some(dedupe.len()),
            Claims::Shared(_) => None,
        }
    }
}

#[cfg(test)]
#[path = "claims_tests.rs"]
mod tests;
