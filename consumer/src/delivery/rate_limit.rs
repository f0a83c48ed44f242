//! Butler's per-app `rateLimit`: after an alert for an app went to a destination, further alerts
//! for the same app to the same destination are dropped for that many seconds. State is per
//! sink and key, kept in the state directory so a restart does not reopen every window. The key
//! is the app id, or `<appId>|<recipient>` for destinations that send each recipient a copy
//! (email), as Butler keys its email rate limiter.
//!
//! With the Redis state store the window lives there instead, one per sink and key for every
//! instance of the group ([`crate::state::RedisStore::window_open`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::state::{RedisStore, now_unix, write_atomically};

const FILE: &str = "rate-limits.json";

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    /// sink name → key (app id, or `<appId>|<recipient>`) → Unix seconds of the last admitted
    /// alert.
    last_sent: BTreeMap<String, BTreeMap<String, u64>>,
}

/// Where the windows live: this instance's file, or the group's Redis.
#[derive(Debug)]
pub enum RateLimits {
    File { path: PathBuf, state: Mutex<State> },
    Shared(RedisStore),
}

impl RateLimits {
    /// Loads the state; an unreadable file starts empty (with a warning): a lost window costs
    /// at most one extra alert.
    pub fn load(state_dir: &Path) -> Self {
        let path = state_dir.join(FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable, starting empty: {e}", path.display());
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => {
                tracing::warn!("{}: unreadable, starting empty: {e}", path.display());
                State::default()
            }
        };
        Self::File {
            path,
            state: Mutex::new(state),
        }
    }

    /// Windows kept in the shared store, one for the whole group.
    pub fn shared(store: RedisStore) -> Self {
        Self::Shared(store)
    }

    /// Whether an alert under `key` (the app id, or `<appId>|<recipient>`) may go to `sink`
    /// now. Does not start the window: [`Self::record`] does, once the alert was delivered or
    /// parked, so a consumer killed in between finds the window still open when the broker
    /// sends the event again. Exact while messages are handled one at a time (the pipeline
    /// does): nothing else can check the same key between this check and the record.
    ///
    /// `holder` names the alert (tenant + event id). With the shared store the check reserves
    /// the window for it, so the group stays exact while instances handle events concurrently,
    /// and an instance taking over a dead one's event may still send it.
    pub async fn is_open(&self, sink: &str, key: &str, window: Duration, holder: &str) -> bool {
        if window.is_zero() {
            return true;
        }
        let state = match self {
            Self::File { state, .. } => state,
            Self::Shared(store) => return store.window_open(sink, key, window, holder).await,
        };
        let now = now_unix();
        let state = state.lock().await;
        state
            .last_sent
            .get(sink)
            .and_then(|per_app| per_app.get(key))
            .is_none_or(|last| now.saturating_sub(*last) >= window.as_secs())
    }

    /// Starts the window for `key` at `sink` now and saves the state.
    pub async fn record(&self, sink: &str, key: &str, window: Duration, holder: &str) {
        if window.is_zero() {
            return;
        }
        let (path, state) = match self {
            Self::File { path, state } => (path, state),
            Self::Shared(store) => return store.window_used(sink, key, window, holder).await,
        };
        let now = now_unix();
        let mut state = state.lock().await;
        let per_app = state.last_sent.entry(sink.to_owned()).or_default();
        per_app.insert(key.to_owned(), now);
        // Forget windows long closed, so the file stays small.
        let horizon = now.saturating_sub(window.as_secs().max(86_400));
        per_app.retain(|_, t| *t >= horizon);
        match serde_json::to_vec(&*state) {
            Ok(bytes) => {
                if let Err(e) = write_atomically(path, &bytes).await {
                    tracing::warn!("{}: cannot save rate-limit state: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("rate-limit state does not serialize: {e}"),
        }
    }

    /// [`Self::is_open`], then [`Self::record`] when it was: for tests that have nothing
    /// between the two.
    #[cfg(test)]
    pub async fn admit(&self, sink: &str, key: &str, window: Duration) -> bool {
        if !self.is_open(sink, key, window, "").await {
            return false;
        }
        self.record(sink, key, window, "").await;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn window_is_per_sink_and_app_and_survives_reload() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RateLimits::load(dir.path());
        let w = Duration::from_secs(60);
        assert!(limits.admit("slack:t", "app1", w).await);
        assert!(!limits.admit("slack:t", "app1", w).await);
        assert!(limits.admit("slack:t", "app2", w).await);
        assert!(limits.admit("teams:t", "app1", w).await);
        // Per app and recipient: one address's window leaves the others open.
        assert!(limits.admit("email:t", "app1|a@example.com", w).await);
        assert!(!limits.admit("email:t", "app1|a@example.com", w).await);
        assert!(limits.admit("email:t", "app1|b@example.com", w).await);
        assert!(limits.admit("email:t", "app2|a@example.com", w).await);
        assert!(limits.admit("slack:t", "app1", Duration::ZERO).await);
        let again = RateLimits::load(dir.path());
        assert!(!again.admit("slack:t", "app1", w).await);
    }

    #[tokio::test]
    async fn checking_does_not_start_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RateLimits::load(dir.path());
        let w = Duration::from_secs(60);
        assert!(limits.is_open("slack:t", "app1", w, "t|e1").await);
        assert!(limits.is_open("slack:t", "app1", w, "t|e1").await);
        assert!(
            RateLimits::load(dir.path())
                .is_open("slack:t", "app1", w, "t|e1")
                .await
        );
        limits.record("slack:t", "app1", w, "t|e1").await;
        assert!(!limits.is_open("slack:t", "app1", w, "t|e1").await);
        assert!(
            !RateLimits::load(dir.path())
                .is_open("slack:t", "app1", w, "t|e1")
                .await
        );
    }
}
