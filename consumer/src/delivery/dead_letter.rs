//! The dead-letter directory: alerts a sink could not take after every retry, one JSON file
//! each, until `consumer replay` delivers them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::alert::Alert;
use crate::state::{fnv1a, write_atomically, write_atomically_blocking};

/// One parked alert, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParkedAlert {
    /// Format version of this file.
    pub version: u32,
    /// The sink that failed, e.g. `slack:<tenantId>` or `webhook:ops`.
    pub sink: String,
    /// RFC 3339, UTC.
    pub parked_at: String,
    /// Tries made before parking (including those of earlier replays).
    pub attempts: u32,
    /// The last error (secret-free: URLs masked).
    pub error: String,
    pub alert: Alert,
}

#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    #[error("cannot write parked alert {path}: {reason}")]
    Write { path: PathBuf, reason: String },
    #[error("cannot read dead-letter directory {path}: {reason}")]
    List { path: PathBuf, reason: String },
    #[error("parked alert {path} is unreadable: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("cannot remove delivered parked alert {path}: {reason}")]
    Remove { path: PathBuf, reason: String },
}

#[derive(Debug, Clone)]
pub struct DeadLetter {
    dir: PathBuf,
}

fn file_part(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect()
}

pub fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

impl DeadLetter {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Parks an alert for a sink and returns the file. The name is stable per sink, event and
    /// recipient, so parking the same alert twice (a redelivery) keeps one file.
    pub async fn park(
        &self,
        sink: &str,
        alert: &Alert,
        attempts: u32,
        error: &str,
    ) -> Result<PathBuf, DeadLetterError> {
        let parked = ParkedAlert {
            version: 1,
            sink: sink.to_owned(),
            parked_at: now_rfc3339(),
            attempts,
            error: error.to_owned(),
            alert: alert.clone(),
        };
        let mut name = format!(
            "{}__{}__{}",
            file_part(&alert.tenant_id),
            file_part(&alert.event_id),
            file_part(sink)
        );
        if let Some(recipient) = &alert.recipient {
            // One file per recipient. The hash keeps addresses that sanitize alike
            // (`a.b@x`, `a_b@x`) apart.
            name.push_str(&format!(
                "__{}-{:08x}",
                file_part(recipient),
                fnv1a(&recipient.to_ascii_lowercase()) as u32
            ));
        }
        let path = self.dir.join(format!("{name}.json"));
        let bytes = serde_json::to_vec_pretty(&parked).map_err(|e| DeadLetterError::Write {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, &bytes)
            .await
            .map_err(|e| DeadLetterError::Write {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        Ok(path)
    }

    /// Parked alert files, oldest name first. A missing directory means nothing is parked.
    pub fn list(&self) -> Result<Vec<PathBuf>, DeadLetterError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => {
                return Err(DeadLetterError::List {
                    path: self.dir.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|x| x == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    pub fn read(path: &Path) -> Result<ParkedAlert, DeadLetterError> {
        let bytes = std::fs::read(path).map_err(|e| DeadLetterError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| DeadLetterError::Read {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    /// Rewrites a parked alert after another failed try.
    pub fn update(path: &Path, parked: &ParkedAlert) -> Result<(), DeadLetterError> {
        let bytes = serde_json::to_vec_pretty(parked).map_err(|e| DeadLetterError::Write {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        write_atomically_blocking(path, &bytes).map_err(|e| DeadLetterError::Write {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }

    pub fn remove(path: &Path) -> Result<(), DeadLetterError> {
        std::fs::remove_file(path).map_err(|e| DeadLetterError::Remove {
            path: path.to_owned(),
            reason: e.to_string(),
        })
    }
}
