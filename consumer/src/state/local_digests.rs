//! Digest windows for one instance ([`super::LocalStore`]): in memory, and in the state
//! directory's `digests.json` before a folded alert's event may be acknowledged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backend::{DueDigest, Folding};
use super::write_atomically;
use crate::digest::DigestSettings;

const DIGESTS_FILE: &str = "digests.json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Window {
    id: String,
    start_ms: u64,
    end_ms: u64,
    count: u32,
    entries: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    /// destination → its current window.
    open: BTreeMap<String, Window>,
    /// Windows that are up, still holding entries: (destination, id) → window.
    closed: Vec<(String, Window)>,
}

pub(super) struct LocalDigests {
    /// `None`: memory only.
    path: Option<PathBuf>,
    stored: tokio::sync::Mutex<Stored>,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl LocalDigests {
    /// Reads the state directory's digests; an unreadable file starts empty, with a warning
    /// (its alerts' events were acknowledged, so say loudly what is lost).
    pub(super) fn open(state_dir: Option<&Path>) -> Self {
        let path = state_dir.map(|d| d.join(DIGESTS_FILE));
        let stored = match &path {
            None => Stored::default(),
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                    tracing::error!(
                        "{}: unreadable, the alerts waiting in its digests are lost: {e}",
                        path.display()
                    );
                    Stored::default()
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
                Err(e) => {
                    tracing::error!(
                        "{}: unreadable, the alerts waiting in its digests are lost: {e}",
                        path.display()
                    );
                    Stored::default()
                }
            },
        };
        Self {
            path,
            stored: tokio::sync::Mutex::new(stored),
        }
    }

    async fn save(&self, stored: &Stored) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let bytes = serde_json::to_vec(stored).map_err(|e| e.to_string())?;
        write_atomically(path, &bytes)
            .await
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    pub(super) async fn fold(
        &self,
        destination: &str,
        settings: DigestSettings,
        entry: &str,
    ) -> Folding {
        let now = now_ms();
        let window_ms = u64::try_from(settings.window.as_millis()).unwrap_or(u64::MAX);
        let mut stored = self.stored.lock().await;
        let current = stored.open.get(destination);
        if current.is_none_or(|w| now >= w.end_ms) {
            if let Some(old) = stored.open.remove(destination)
                && !old.entries.is_empty()
            {
                stored.closed.push((destination.to_owned(), old));
            }
            // A window id that repeats (two windows within one millisecond) would mix digests.
            let id = now.max(
                stored
                    .closed
                    .iter()
                    .filter(|(d, _)| d == destination)
                    .filter_map(|(_, w)| w.id.parse::<u64>().ok())
                    .max()
                    .map_or(0, |id| id + 1),
            );
            stored.open.insert(
                destination.to_owned(),
                Window {
                    id: id.to_string(),
                    start_ms: now,
                    end_ms: now.saturating_add(window_ms),
                    count: 0,
                    entries: Vec::new(),
                },
            );
        }
        let Some(window) = stored.open.get_mut(destination) else {
            return Folding::Single;
        };
        window.count = window.count.saturating_add(1);
        if window.count <= settings.after_alerts {
            return Folding::Single;
        }
        window.entries.push(entry.to_owned());
        let id = window.id.clone();
        match self.save(&stored).await {
            Ok(()) => Folding::Folded { window: id },
            Err(e) => {
                // Not durable: the alert goes out on its own rather than wait in memory.
                tracing::error!("cannot keep an alert for its digest ({e}); it is sent as it is");
                if let Some(window) = stored.open.get_mut(destination) {
                    window.entries.pop();
                }
                Folding::Single
            }
        }
    }

    pub(super) async fn due(&self) -> Vec<DueDigest> {
        let now = now_ms();
        let stored = self.stored.lock().await;
        let due = |destination: &String, w: &Window| DueDigest {
            destination: destination.clone(),
            window: w.id.clone(),
            start_ms: w.start_ms,
            end_ms: w.end_ms,
        };
        let mut list: Vec<DueDigest> = stored
            .closed
            .iter()
            .map(|(d, w)| due(d, w))
            .chain(
                stored
                    .open
                    .iter()
                    .filter(|(_, w)| now >= w.end_ms && !w.entries.is_empty())
                    .map(|(d, w)| due(d, w)),
            )
            .collect();
        list.sort_by_key(|d| d.end_ms);
        list
    }

    pub(super) async fn entries(&self, destination: &str, window: &str) -> Vec<String> {
        let now = now_ms();
        let mut stored = self.stored.lock().await;
        // Closing an open window that is up: the next alert opens a new one.
        if stored
            .open
            .get(destination)
            .is_some_and(|w| w.id == window && now >= w.end_ms)
            && let Some(old) = stored.open.remove(destination)
        {
            stored.closed.push((destination.to_owned(), old));
        }
        stored
            .closed
            .iter()
            .find(|(d, w)| d == destination && w.id == window)
            .map(|(_, w)| w.entries.clone())
            .unwrap_or_default()
    }

    pub(super) async fn clear(&self, destination: &str, window: &str) {
        let mut stored = self.stored.lock().await;
        let before = stored.closed.len();
        stored
            .closed
            .retain(|(d, w)| !(d == destination && w.id == window));
        if stored.closed.len() != before
            && let Err(e) = self.save(&stored).await
        {
            // Its parts are held on disk already: at worst the digest is sent twice.
            tracing::warn!("cannot forget a digest that is on its way ({e}); it may be sent twice");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn settings(window_ms: u64) -> DigestSettings {
        DigestSettings {
            after_alerts: 2,
            window: Duration::from_millis(window_ms),
        }
    }

    #[tokio::test]
    async fn alerts_past_the_first_are_folded_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let digests = LocalDigests::open(Some(dir.path()));
        let s = settings(60_000);
        assert_eq!(digests.fold("slack:t", s, "a").await, Folding::Single);
        assert_eq!(digests.fold("slack:t", s, "b").await, Folding::Single);
        let Folding::Folded { window } = digests.fold("slack:t", s, "c").await else {
            panic!("third alert not folded");
        };
        assert_eq!(
            digests.fold("slack:t", s, "d").await,
            Folding::Folded {
                window: window.clone()
            }
        );
        // Another destination has a window of its own.
        assert_eq!(digests.fold("teams:t", s, "x").await, Folding::Single);
        assert!(digests.due().await.is_empty(), "not up yet");
        drop(digests);
        let again = LocalDigests::open(Some(dir.path()));
        assert!(again.due().await.is_empty());
        assert_eq!(
            again.entries("slack:t", &window).await,
            Vec::<String>::new()
        );
        let stored = again.stored.lock().await;
        assert_eq!(stored.open["slack:t"].entries, ["c", "d"]);
    }

    #[tokio::test]
    async fn a_window_that_is_up_is_due_closed_and_cleared() {
        let digests = LocalDigests::open(None);
        let s = settings(0);
        // A zero window closes at once: every alert opens a new one, nothing is folded.
        assert_eq!(digests.fold("d", s, "a").await, Folding::Single);
        let s = settings(30);
        for entry in ["a", "b"] {
            digests.fold("d", s, entry).await;
        }
        let Folding::Folded { window } = digests.fold("d", s, "c").await else {
            panic!("not folded");
        };
        tokio::time::sleep(Duration::from_millis(40)).await;
        let due = digests.due().await;
        assert_eq!(due.len(), 1);
        assert_eq!(
            (due[0].destination.as_str(), &due[0].window),
            ("d", &window)
        );
        assert_eq!(digests.entries("d", &window).await, ["c"]);
        // A new alert after the close opens a new window and is sent as it is.
        assert_eq!(digests.fold("d", s, "e").await, Folding::Single);
        // Asked again (an instance died before holding it), the same entries.
        assert_eq!(digests.entries("d", &window).await, ["c"]);
        digests.clear("d", &window).await;
        assert!(digests.due().await.is_empty());
        assert!(digests.entries("d", &window).await.is_empty());
    }
}
