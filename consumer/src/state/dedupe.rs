//! Dedupe: an event is alerted on once, even when it arrives again — QoS 1 redelivery after a
//! crash between delivery and acknowledgement, or Qlik retrying / an admin resending a webhook.
//! A failed reload is alerted on once too: Qlik reports one failed app reload both as
//! `com.qlik.v1.app.reload.finished` and as `com.qlik.v1.reload.finished`, with different
//! event ids and the same reload id, so an alert remembers its reload id ([`reload_key`]) as
//! well as its event id.
//!
//! Handled event ids are remembered in `<stateDirectory>/seen-events.json`, bounded both by age
//! (`dedupe.retentionHours`) and by count ([`MAX_ENTRIES`], oldest forgotten first), and
//! rewritten atomically (temporary file + rename) after each new id, so a crash leaves either
//! the old or the new list, never a torn one. Only events that produce alerts are remembered;
//! that keeps the file small. A full memory forgetting ids before their retention ends is
//! announced (a warning per save, and `qscloud_consumer_dedupe_evicted_total`): a redelivery of
//! one of them would be alerted again.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{now_unix, write_atomically};

pub const FILE: &str = "seen-events.json";
/// Far above the number of failed reloads a tenant produces in a week.
pub const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, thiserror::Error)]
#[error("cannot save dedupe state {path}: {reason}")]
pub struct DedupeError {
    pub path: PathBuf,
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// `[key, unix seconds]`, oldest first.
    seen: Vec<(String, u64)>,
}

#[derive(Debug)]
pub struct Dedupe {
    /// `None`: kept in memory only (unit tests).
    path: Option<PathBuf>,
    retention: Duration,
    max_entries: usize,
    order: VecDeque<(String, u64)>,
    index: HashMap<String, u64>,
    /// Ids forgotten for lack of room (not age) since this memory was loaded.
    evicted: u64,
}

/// The dedupe key: event ids are only unique per tenant.
pub fn key(tenant_id: &str, event_id: &str) -> String {
    format!("{tenant_id}/{event_id}")
}

/// The dedupe key of a reload: reload ids are unique per tenant. The prefix keeps it apart
/// from every event key (those start with the tenant id, which has no `:`).
pub fn reload_key(tenant_id: &str, reload_id: &str) -> String {
    format!("reload:{tenant_id}/{reload_id}")
}

impl Dedupe {
    /// Loads the remembered ids. An unreadable file is set aside (renamed `.corrupt`) and the
    /// consumer starts with an empty memory: a possible duplicate alert beats not starting.
    pub fn load(state_dir: &Path, retention: Duration) -> Self {
        Self::load_bounded(state_dir, retention, MAX_ENTRIES)
    }

    pub fn load_bounded(state_dir: &Path, retention: Duration, max_entries: usize) -> Self {
        let path = state_dir.join(FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<Stored>(&bytes).unwrap_or_else(|e| {
                let aside = path.with_extension("json.corrupt");
                tracing::warn!(
                    "{}: unreadable ({e}); moved to {} and starting with no remembered events",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                Stored::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(e) => {
                tracing::warn!("{}: unreadable ({e}); starting empty", path.display());
                Stored::default()
            }
        };
        let mut dedupe = Self {
            path: Some(path),
            retention,
            max_entries: max_entries.max(1),
            order: VecDeque::new(),
            index: HashMap::new(),
            evicted: 0,
        };
        for (key, at) in stored.seen {
            dedupe.insert(key, at);
        }
        dedupe.prune(now_unix());
        dedupe
    }

    /// A memory that is never written: for unit tests.
    pub fn in_memory(retention: Duration) -> Self {
        Self {
            path: None,
            retention,
            max_entries: MAX_ENTRIES,
            evicted: 0,
            order: VecDeque::new(),
            index: HashMap::new(),
        }
    }

    fn insert(&mut self, key: String, at: u64) {
        if self.index.insert(key.clone(), at).is_none() {
            self.order.push_back((key, at));
        }
    }

    fn prune(&mut self, now: u64) {
        let horizon = now.saturating_sub(self.retention.as_secs());
        let mut evicted = 0u64;
        while let Some((key, at)) = self.order.front() {
            let expired = *at < horizon;
            if expired || self.order.len() > self.max_entries {
                if !expired {
                    evicted += 1;
                }
                self.index.remove(key);
                self.order.pop_front();
            } else {
                break;
            }
        }
        if evicted > 0 {
            self.evicted = self.evicted.saturating_add(evicted);
            crate::metrics::global().dedupe_evicted(evicted);
            // One line per prune, not per id: a full memory evicts at every new alert.
            tracing::warn!(
                path = %self.path.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_else(|| "memory".to_owned()),
                max_entries = self.max_entries,
                evicted,
                "dedupe memory full: forgot the {evicted} oldest event id(s) before \
                 dedupe.retentionHours ended; a redelivery of one of them would be alerted again"
            );
        }
    }

    /// Ids forgotten because the memory was full (not because they aged out) since it was
    /// loaded; also counted in `qscloud_consumer_dedupe_evicted_total`.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether this event was already handled (within the retention).
    pub fn seen(&self, key: &str) -> bool {
        self.index
            .get(key)
            .is_some_and(|at| now_unix().saturating_sub(*at) <= self.retention.as_secs())
    }

    /// Remembers a handled event and saves the list before returning, so the MQTT
    /// acknowledgement that follows never gets ahead of the memory.
    pub async fn remember(&mut self, key: &str) -> Result<(), DedupeError> {
        self.remember_all(&[key]).await
    }

    /// Remembers several keys of one handled alert (event and reload) with one save.
    pub async fn remember_all<K: AsRef<str>>(&mut self, keys: &[K]) -> Result<(), DedupeError> {
        self.insert_now(keys);
        match self.encoded()? {
            Some((path, bytes)) => write_atomically(&path, &bytes)
                .await
                .map_err(|e| DedupeError {
                    path,
                    reason: e.to_string(),
                }),
            None => Ok(()),
        }
    }

    /// Remembers keys in memory only; [`Self::encoded`] then gives what to save. Lets a caller
    /// save once for many keys remembered at about the same time (group commit).
    pub fn insert_now<K: AsRef<str>>(&mut self, keys: &[K]) {
        let now = now_unix();
        for key in keys {
            self.insert(key.as_ref().to_owned(), now);
        }
        self.prune(now);
    }

    /// The file and its content as it should be now; `None` for a memory-only dedupe.
    pub fn encoded(&self) -> Result<Option<(PathBuf, Vec<u8>)>, DedupeError> {
        let Some(path) = &self.path else {
            return Ok(None);
        };
        let stored = Stored {
            version: 1,
            seen: self.order.iter().cloned().collect(),
        };
        let bytes = serde_json::to_vec(&stored).map_err(|e| DedupeError {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Some((path.clone(), bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn remembers_across_restarts_and_forgets_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let week = Duration::from_secs(7 * 86_400);
        let mut d = Dedupe::load_bounded(dir.path(), week, 3);
        for id in ["a", "b", "c", "d"] {
            assert!(!d.seen(&key("t", id)));
            d.remember(&key("t", id)).await.unwrap();
        }
        assert!(d.seen(&key("t", "d")));
        assert!(!d.seen(&key("t", "a")), "bounded to 3, oldest forgotten");
        assert!(!d.seen(&key("other", "d")), "per tenant");
        let again = Dedupe::load_bounded(dir.path(), week, 3);
        assert_eq!(again.len(), 3);
        assert!(again.seen(&key("t", "b")) && again.seen(&key("t", "d")));
    }

    /// Collects what `tracing` writes on this thread.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .map_err(|_| std::io::Error::other("poisoned"))?
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_full_memory_warns_once_per_save_and_counts_what_it_forgot() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        // The test runs on this one thread, so the subscriber sees every line it logs.
        let _guard = tracing::subscriber::set_default(subscriber);
        let before = crate::metrics::global().dedupe_evicted_count();

        let dir = tempfile::tempdir().unwrap();
        let week = Duration::from_secs(7 * 86_400);
        let mut d = Dedupe::load_bounded(dir.path(), week, 2);
        d.remember_all(&["t/a", "t/b"]).await.unwrap();
        assert_eq!(d.evicted(), 0);
        assert!(!captured.text().contains("dedupe memory full"));

        // Three more in one save: three evicted, one warning naming the count.
        d.remember_all(&["t/c", "t/d", "t/e"]).await.unwrap();
        assert_eq!(d.evicted(), 3);
        assert_eq!(d.len(), 2);
        let log = captured.text();
        assert_eq!(log.matches("dedupe memory full").count(), 1, "{log}");
        assert!(log.contains("forgot the 3 oldest"), "{log}");
        assert!(log.contains("WARN"), "{log}");

        // Ids that aged out are not evictions.
        let old = Stored {
            version: 1,
            seen: vec![("t/old".into(), 1)],
        };
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&old).unwrap()).unwrap();
        let aged = Dedupe::load_bounded(dir.path(), week, 2);
        assert_eq!(aged.evicted(), 0);
        assert_eq!(captured.text().matches("dedupe memory full").count(), 1);

        // Process-wide, other tests may evict too: at least ours are counted.
        assert!(crate::metrics::global().dedupe_evicted_count() >= before + 3);
    }

    #[tokio::test]
    async fn expired_ids_are_dropped_and_a_corrupt_file_is_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let old = Stored {
            version: 1,
            seen: vec![("t/old".into(), 1), ("t/new".into(), now_unix())],
        };
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&old).unwrap()).unwrap();
        let d = Dedupe::load(dir.path(), Duration::from_secs(3600));
        assert!(!d.seen("t/old"));
        assert!(d.seen("t/new"));

        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let d = Dedupe::load(dir.path(), Duration::from_secs(3600));
        assert!(d.is_empty());
        assert!(dir.path().join("seen-events.json.corrupt").exists());
    }
}
