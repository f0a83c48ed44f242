//! [`StateBackend`] for one instance: files in the state directory (the embedded default), or
//! memory only (unit tests). Claims and leases live in this process — nobody else shares them —
//! while what must survive a restart (remembered events, rate-limit windows) is written to the
//! state directory before the call returns, so an MQTT acknowledgement never gets ahead of it.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::backend::{BoxFuture, ClaimState, DueDigest, Folding, RateWindow, StateBackend};
use super::dedupe::Dedupe;
use super::local_digests::LocalDigests;
use super::local_notes::LocalNotes;
use super::{now_unix, write_atomically};
use crate::digest::DigestSettings;

const WINDOWS_FILE: &str = "rate-limits.json";
const DONE: &str = "done";

/// Butler's per-app `rateLimit` windows as stored: sink name → key (app id, or
/// `<appId>|<recipient>`) → Unix seconds of the last alert that went out (or was held).
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredWindows {
    last_sent: BTreeMap<String, BTreeMap<String, u64>>,
}

#[derive(Debug, Default)]
struct Windows {
    stored: StoredWindows,
    /// Open windows reserved for a claim until its alert went out: (sink, key) → holder.
    reserved: HashMap<(String, String), (String, Instant)>,
}

pub struct LocalStore {
    /// `None`: memory only.
    dir: Option<PathBuf>,
    dedupe: tokio::sync::Mutex<Dedupe>,
    /// Group commit of the dedupe file: every `done` bumps `changes`; a saver writes the file
    /// once for all changes made so far, and records the last change it covered here, so the
    /// callers that queued behind it find their keys already saved.
    changes: AtomicU64,
    saved: tokio::sync::Mutex<u64>,
    /// Claims of events in hand: key → token.
    in_hand: Mutex<HashMap<String, String>>,
    windows: tokio::sync::Mutex<Windows>,
    leases: Mutex<HashMap<String, (String, Instant)>>,
    digests: LocalDigests,
    notes: LocalNotes,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic elsewhere while holding the lock leaves plain data behind: keep using it.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LocalStore {
    /// A note as the state directory holds it, read without opening a store (the running
    /// consumer keeps the store; this only reads its file).
    pub fn read_note(state_dir: &Path, key: &str) -> Option<String> {
        LocalNotes::read(state_dir, key)
    }

    /// The state directory's files: remembered events and rate-limit windows. Unreadable files
    /// start empty, with a warning (a possible duplicate alert beats not starting).
    pub fn open(state_dir: &Path, retention: Duration) -> Self {
        let path = state_dir.join(WINDOWS_FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!("{}: unreadable, starting empty: {e}", path.display());
                StoredWindows::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => StoredWindows::default(),
            Err(e) => {
                tracing::warn!("{}: unreadable, starting empty: {e}", path.display());
                StoredWindows::default()
            }
        };
        Self {
            dir: Some(state_dir.to_owned()),
            dedupe: tokio::sync::Mutex::new(Dedupe::load(state_dir, retention)),
            changes: AtomicU64::new(0),
            saved: tokio::sync::Mutex::new(0),
            in_hand: Mutex::default(),
            windows: tokio::sync::Mutex::new(Windows {
                stored,
                reserved: HashMap::new(),
            }),
            leases: Mutex::default(),
            digests: LocalDigests::open(Some(state_dir)),
            notes: LocalNotes::open(Some(state_dir)),
        }
    }

    /// Nothing written anywhere: for unit tests.
    pub fn memory(retention: Duration) -> Self {
        Self {
            dir: None,
            dedupe: tokio::sync::Mutex::new(Dedupe::in_memory(retention)),
            changes: AtomicU64::new(0),
            saved: tokio::sync::Mutex::new(0),
            in_hand: Mutex::default(),
            windows: tokio::sync::Mutex::default(),
            leases: Mutex::default(),
            digests: LocalDigests::open(None),
            notes: LocalNotes::open(None),
        }
    }

    /// Saves the dedupe file unless a save since change `mine` already covered it.
    async fn save_dedupe(&self, mine: u64) -> Result<(), super::dedupe::DedupeError> {
        let mut saved = self.saved.lock().await;
        if *saved >= mine {
            return Ok(());
        }
        let (encoded, covered) = {
            let dedupe = self.dedupe.lock().await;
            (dedupe.encoded()?, self.changes.load(Ordering::SeqCst))
        };
        if let Some((path, bytes)) = encoded {
            write_atomically(&path, &bytes)
                .await
                .map_err(|e| super::dedupe::DedupeError {
                    path,
                    reason: e.to_string(),
                })?;
        }
        *saved = covered;
        Ok(())
    }

    async fn save_windows(&self, windows: &Windows) {
        let Some(dir) = &self.dir else { return };
        let path = dir.join(WINDOWS_FILE);
        match serde_json::to_vec(&windows.stored) {
            Ok(bytes) => {
                if let Err(e) = write_atomically(&path, &bytes).await {
                    tracing::warn!("{}: cannot save rate-limit state: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("rate-limit state does not serialize: {e}"),
        }
    }
}

impl StateBackend for LocalStore {
    fn describe(&self) -> String {
        match &self.dir {
            Some(dir) => format!("files in {}", dir.display()),
            None => "memory".to_owned(),
        }
    }

    fn shared(&self) -> bool {
        false
    }

    fn claim<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        _lease: Duration,
    ) -> BoxFuture<'a, ClaimState> {
        Box::pin(async move {
            // Dedupe first (it is the slower lock), then the claims in hand.
            let done = self.dedupe.lock().await.seen(key);
            if done {
                return ClaimState::Done;
            }
            let mut in_hand = lock(&self.in_hand);
            match in_hand.get(key) {
                Some(holder) => ClaimState::HeldElsewhere(holder.clone()),
                None => {
                    in_hand.insert(key.to_owned(), token.to_owned());
                    ClaimState::Mine
                }
            }
        })
    }

    fn renew<'a>(&'a self, key: &'a str, token: &'a str, _lease: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move { lock(&self.in_hand).get(key).is_some_and(|t| t == token) })
    }

    fn done<'a>(
        &'a self,
        key: &'a str,
        also: &'a [String],
        _retention: Duration,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let mut keys = vec![key];
            keys.extend(also.iter().map(String::as_str));
            let mine = {
                let mut dedupe = self.dedupe.lock().await;
                dedupe.insert_now(&keys);
                self.changes.fetch_add(1, Ordering::SeqCst) + 1
            };
            // The acknowledgement waits for the save; events finishing together share one.
            if let Err(e) = self.save_dedupe(mine).await {
                // The alert went out; failing here would only send it again.
                tracing::error!("{e}; a redelivery of this event would alert again");
            }
            lock(&self.in_hand).remove(key)
        })
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut in_hand = lock(&self.in_hand);
            if in_hand.get(key).is_some_and(|t| t == token) {
                in_hand.remove(key);
            }
        })
    }

    fn state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            if let Some(token) = lock(&self.in_hand).get(key) {
                return Some(token.clone());
            }
            self.dedupe.lock().await.seen(key).then(|| DONE.to_owned())
        })
    }

    fn seen<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(async move { self.dedupe.lock().await.seen(key) })
    }

    fn window_open<'a>(&'a self, w: RateWindow<'a>) -> BoxFuture<'a, bool> {
        let RateWindow {
            sink,
            key,
            length: window,
            holder,
        } = w;
        Box::pin(async move {
            if window.is_zero() {
                return true;
            }
            let mut windows = self.windows.lock().await;
            let closed = windows
                .stored
                .last_sent
                .get(sink)
                .and_then(|per_key| per_key.get(key))
                .is_some_and(|last| now_unix().saturating_sub(*last) < window.as_secs());
            if closed {
                return false;
            }
            let id = (sink.to_owned(), key.to_owned());
            let now = Instant::now();
            match windows.reserved.get(&id) {
                Some((other, until)) if other != holder && *until > now => false,
                _ => {
                    windows
                        .reserved
                        .insert(id, (holder.to_owned(), now + window));
                    true
                }
            }
        })
    }

    fn window_used<'a>(&'a self, w: RateWindow<'a>) -> BoxFuture<'a, ()> {
        let RateWindow {
            sink,
            key,
            length: window,
            ..
        } = w;
        Box::pin(async move {
            if window.is_zero() {
                return;
            }
            let now = now_unix();
            let mut windows = self.windows.lock().await;
            windows.reserved.remove(&(sink.to_owned(), key.to_owned()));
            let per_key = windows.stored.last_sent.entry(sink.to_owned()).or_default();
            per_key.insert(key.to_owned(), now);
            // Forget windows long closed, so the file stays small.
            let horizon = now.saturating_sub(window.as_secs().max(86_400));
            per_key.retain(|_, t| *t >= horizon);
            self.save_windows(&windows).await;
        })
    }

    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let now = Instant::now();
            let mut leases = lock(&self.leases);
            match leases.get(name) {
                Some((other, until)) if other != holder && *until > now => false,
                _ => {
                    leases.insert(name.to_owned(), (holder.to_owned(), now + ttl));
                    true
                }
            }
        })
    }

    fn unlease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut leases = lock(&self.leases);
            if leases.get(name).is_some_and(|(h, _)| h == holder) {
                leases.remove(name);
            }
        })
    }

    fn digest_fold<'a>(
        &'a self,
        destination: &'a str,
        settings: DigestSettings,
        entry: &'a str,
    ) -> BoxFuture<'a, Folding> {
        Box::pin(self.digests.fold(destination, settings, entry))
    }

    fn digests_due<'a>(&'a self) -> BoxFuture<'a, Vec<DueDigest>> {
        Box::pin(self.digests.due())
    }

    fn digest_entries<'a>(
        &'a self,
        destination: &'a str,
        window: &'a str,
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(self.digests.entries(destination, window))
    }

    fn digest_clear<'a>(&'a self, destination: &'a str, window: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(self.digests.clear(destination, window))
    }

    fn note<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(self.notes.get(key))
    }

    fn set_note<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        retention: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(self.notes.set(key, value, retention))
    }

    fn remembered(&self) -> Option<usize> {
        self.dedupe.try_lock().ok().map(|d| d.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn windows_are_per_sink_and_key_and_survive_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = LocalStore::open(dir.path(), W);
        for (sink, key) in [
            ("slack:t", "app1"),
            ("slack:t", "app2"),
            ("teams:t", "app1"),
            ("email:t", "app1|a@example.com"),
            ("email:t", "app1|b@example.com"),
        ] {
            assert!(
                store.window_open(RateWindow::new(sink, key, W, "h1")).await,
                "{sink} {key}"
            );
            store.window_used(RateWindow::new(sink, key, W, "h1")).await;
        }
        assert!(
            !store
                .window_open(RateWindow::new("slack:t", "app1", W, "h2"))
                .await
        );
        assert!(
            !store
                .window_open(RateWindow::new("email:t", "app1|a@example.com", W, "h2"))
                .await
        );
        assert!(
            store
                .window_open(RateWindow::new("slack:t", "app1", Duration::ZERO, "h2"))
                .await
        );
        let again = LocalStore::open(dir.path(), W);
        assert!(
            !again
                .window_open(RateWindow::new("slack:t", "app1", W, "h3"))
                .await
        );
        assert!(
            again
                .window_open(RateWindow::new("slack:t", "app3", W, "h3"))
                .await
        );
    }

    /// The window belongs to the claim: whoever holds it (the same holder) may still send; an
    /// alert of another reload of the app may not while the reservation stands.
    #[tokio::test]
    async fn a_reserved_window_is_the_holders() {
        let store = LocalStore::memory(W);
        assert!(
            store
                .window_open(RateWindow::new("slack:t", "app", W, "reload:t/r1"))
                .await
        );
        assert!(
            store
                .window_open(RateWindow::new("slack:t", "app", W, "reload:t/r1"))
                .await
        );
        assert!(
            !store
                .window_open(RateWindow::new("slack:t", "app", W, "reload:t/r2"))
                .await
        );
        store
            .window_used(RateWindow::new("slack:t", "app", W, "reload:t/r1"))
            .await;
        assert!(
            !store
                .window_open(RateWindow::new("slack:t", "app", W, "reload:t/r1"))
                .await
        );
    }

    #[tokio::test]
    async fn claims_are_exclusive_until_done_or_released() {
        let store = LocalStore::memory(W);
        assert_eq!(store.claim("k", "a", W).await, ClaimState::Mine);
        assert_eq!(
            store.claim("k", "b", W).await,
            ClaimState::HeldElsewhere("a".into())
        );
        store.release("k", "b").await;
        assert_eq!(store.state("k").await.as_deref(), Some("a"));
        store.release("k", "a").await;
        assert_eq!(store.state("k").await, None);
        assert_eq!(store.claim("k", "b", W).await, ClaimState::Mine);
        assert_eq!(
            store.done("k", &["also".into()], W).await.as_deref(),
            Some("b")
        );
        assert_eq!(store.claim("k", "c", W).await, ClaimState::Done);
        assert!(store.seen("also").await);
    }

    /// Many events finishing at once share saves (group commit), yet every key is on disk when
    /// its `done` returns.
    #[tokio::test]
    async fn events_done_together_are_each_on_disk_when_done_returns() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = std::sync::Arc::new(LocalStore::open(dir.path(), W));
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..64 {
            let store = std::sync::Arc::clone(&store);
            tasks.spawn(async move {
                let key = format!("t/e{i}");
                assert_eq!(store.claim(&key, "tok", W).await, ClaimState::Mine);
                store.done(&key, &[], W).await;
                // Saved before `done` returned.
                assert!(
                    LocalStore::open(store.dir.as_deref().expect("dir"), W)
                        .seen(&key)
                        .await
                );
            });
        }
        while let Some(joined) = tasks.join_next().await {
            joined.expect("task");
        }
        let again = LocalStore::open(dir.path(), W);
        for i in 0..64 {
            assert!(again.seen(&format!("t/e{i}")).await, "e{i}");
        }
    }

    #[tokio::test]
    async fn leases_exclude_other_holders_until_given_back_or_expired() {
        let store = LocalStore::memory(W);
        assert!(store.lease("p", "a", W).await);
        assert!(store.lease("p", "a", W).await, "renewal");
        assert!(!store.lease("p", "b", W).await);
        store.unlease("p", "a").await;
        assert!(store.lease("p", "b", Duration::from_millis(1)).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(store.lease("p", "a", W).await, "expired lease is free");
    }
}
