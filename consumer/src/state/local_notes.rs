//! Notes for one instance ([`super::LocalStore`]): small values kept in the state directory's
//! `notes.json` (the webhook watchdog's findings, which `consumer webhook status` reads).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{now_unix, write_atomically};

const NOTES_FILE: &str = "notes.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Note {
    value: String,
    /// Unix seconds after which the note is forgotten.
    until: u64,
}

/// The notes in `path`; none when it is missing or unreadable.
fn load(path: &Path) -> BTreeMap<String, Note> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default()
}

/// A note's value while its retention lasts.
fn live(notes: &BTreeMap<String, Note>, key: &str) -> Option<String> {
    notes
        .get(key)
        .filter(|n| n.until > now_unix())
        .map(|n| n.value.clone())
}

pub(super) struct LocalNotes {
    /// `None`: memory only.
    path: Option<PathBuf>,
    notes: tokio::sync::Mutex<BTreeMap<String, Note>>,
}

impl LocalNotes {
    /// Reads the notes file; an unreadable one starts empty (notes are findings a later check
    /// makes again).
    pub(super) fn open(state_dir: Option<&Path>) -> Self {
        let path = state_dir.map(|d| d.join(NOTES_FILE));
        let notes = path.as_deref().map(load).unwrap_or_default();
        Self {
            path,
            notes: tokio::sync::Mutex::new(notes),
        }
    }

    /// Reads a note straight from the state directory, without a store (for commands that run
    /// beside a consumer, such as `consumer webhook status`).
    pub(super) fn read(state_dir: &Path, key: &str) -> Option<String> {
        live(&load(&state_dir.join(NOTES_FILE)), key)
    }

    pub(super) async fn get(&self, key: &str) -> Option<String> {
        live(&*self.notes.lock().await, key)
    }

    pub(super) async fn set(&self, key: &str, value: &str, retention: Duration) {
        let mut notes = self.notes.lock().await;
        let now = now_unix();
        notes.retain(|_, n| n.until > now);
        notes.insert(
            key.to_owned(),
            Note {
                value: value.to_owned(),
                until: now.saturating_add(retention.as_secs()),
            },
        );
        let Some(path) = &self.path else { return };
        match serde_json::to_vec(&*notes) {
            Ok(bytes) => {
                if let Err(e) = write_atomically(path, &bytes).await {
                    tracing::warn!("{}: cannot save: {e}", path.display());
                }
            }
            Err(e) => tracing::warn!("notes do not serialize: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_survive_a_restart_and_are_read_without_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let notes = LocalNotes::open(Some(dir.path()));
        assert_eq!(notes.get("k").await, None);
        notes.set("k", "v1", Duration::from_secs(60)).await;
        notes.set("k", "v2", Duration::from_secs(60)).await;
        notes.set("gone", "x", Duration::ZERO).await;
        assert_eq!(notes.get("k").await.as_deref(), Some("v2"));
        assert_eq!(notes.get("gone").await, None);
        assert_eq!(LocalNotes::read(dir.path(), "k").as_deref(), Some("v2"));
        let again = LocalNotes::open(Some(dir.path()));
        assert_eq!(again.get("k").await.as_deref(), Some("v2"));
    }
}
