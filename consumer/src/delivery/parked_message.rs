//! Raw messages the pipeline could not handle — a panic or an error while handling one, or a
//! shutdown that came before it was handled without a session to keep it — parked with their
//! topic and the reason, so one bad message never stops the alerts queued behind it.
//!
//! One JSON file per message in `<deadLetterDirectory>/messages/`, apart from parked alerts
//! (which `consumer replay` re-sends): a raw message is no alert yet. `consumer replay --list`
//! lists them; after a fix, publishing the payload again to its topic handles it anew.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::state::{fnv1a, now_rfc3339, write_atomically};

/// The subdirectory of the dead-letter directory that holds parked raw messages.
pub const MESSAGES_DIR: &str = "messages";

/// One parked raw message, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedMessage {
    /// Format version of this file.
    pub version: u32,
    /// RFC 3339, UTC.
    pub parked_at: String,
    /// The MQTT topic it arrived on.
    pub topic: String,
    /// Why it was parked, e.g. `panic while handling: …`.
    pub reason: String,
    /// The payload as text when it is UTF-8 (Qlik events are JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// The payload in hexadecimal when it is not UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_hex: Option<String>,
}

impl ParkedMessage {
    pub fn new(topic: &str, payload: &[u8], reason: &str) -> Self {
        let (text, hex) = match std::str::from_utf8(payload) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (
                None,
                Some(payload.iter().map(|b| format!("{b:02x}")).collect()),
            ),
        };
        Self {
            version: 1,
            parked_at: now_rfc3339(),
            topic: topic.to_owned(),
            reason: reason.to_owned(),
            payload: text,
            payload_hex: hex,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("cannot park the raw message in {path}: {reason}")]
pub struct ParkMessageError {
    pub path: PathBuf,
    pub reason: String,
}

/// `<deadLetterDirectory>/messages`.
pub fn messages_dir(dead_letter_dir: &Path) -> PathBuf {
    dead_letter_dir.join(MESSAGES_DIR)
}

/// Writes the message to `<deadLetterDirectory>/messages/` and returns the file. The name is
/// stable per topic and payload, so the same message parked twice (a redelivery) keeps one file.
pub async fn park_message(
    dead_letter_dir: &Path,
    message: &ParkedMessage,
) -> Result<PathBuf, ParkMessageError> {
    let dir = messages_dir(dead_letter_dir);
    let fail = |path: &Path, e: &dyn std::fmt::Display| ParkMessageError {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| fail(&dir, &e))?;
    let body = message
        .payload
        .as_deref()
        .or(message.payload_hex.as_deref())
        .unwrap_or_default();
    let hash = fnv1a(&format!("{}\n{body}", message.topic));
    let path = dir.join(format!("message-{hash:016x}.json"));
    let bytes = serde_json::to_vec_pretty(message).map_err(|e| fail(&path, &e))?;
    write_atomically(&path, &bytes)
        .await
        .map_err(|e| fail(&path, &e))?;
    Ok(path)
}

/// Parked raw messages, by file name; a missing directory means none.
pub fn list_messages(dead_letter_dir: &Path) -> std::io::Result<Vec<(PathBuf, ParkedMessage)>> {
    let dir = messages_dir(dead_letter_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
        Err(e) => return Err(e),
    };
    let mut out: Vec<(PathBuf, ParkedMessage)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| {
            let parked = serde_json::from_slice(&std::fs::read(&p).ok()?).ok()?;
            Some((p, parked))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parks_text_and_binary_payloads_once_each() {
        let dir = tempfile::tempdir().unwrap();
        let text = ParkedMessage::new("qscloud/a", br#"{"id":"e"}"#, "panic");
        let first = park_message(dir.path(), &text).await.unwrap();
        let again = park_message(dir.path(), &text).await.unwrap();
        assert_eq!(first, again, "a redelivery keeps one file");
        let binary = ParkedMessage::new("qscloud/a", &[0xff, 0x00], "error");
        park_message(dir.path(), &binary).await.unwrap();
        let listed = list_messages(dir.path()).unwrap();
        assert_eq!(listed.len(), 2);
        assert!(
            listed
                .iter()
                .any(|(_, m)| m.payload.as_deref() == Some(r#"{"id":"e"}"#))
        );
        assert!(
            listed
                .iter()
                .any(|(_, m)| m.payload_hex.as_deref() == Some("ff00"))
        );
    }
}
