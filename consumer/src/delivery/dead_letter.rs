//! The dead-letter directory: alerts a sink could not take after every retry, one JSON file
//! each, until `consumer replay` delivers them.
//!
//! `consumer replay` holds the directory's lock ([`DeadLetter::try_lock`]) while it re-sends, so
//! two replays never run at once; the running consumer's automatic redelivery looks at the lock
//! before each round and leaves the files to a replay that holds it.

use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::alert::Alert;
use crate::delivery::parked_message::MESSAGES_DIR;
use crate::state::{
    create_private_dir, fnv1a, now_rfc3339, now_unix, write_atomically, write_atomically_blocking,
};

/// The lock file in the dead-letter directory. A dot-file, so it is never taken for a parked
/// alert.
pub const LOCK_FILE: &str = ".lock";

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
    /// Automatic redeliveries tried so far (`consumer.redelivery.scheduleSeconds`).
    #[serde(default)]
    pub redeliveries: u32,
    /// Unix seconds of the next automatic redelivery. Absent in files written before automatic
    /// redelivery existed: those are scheduled as if parked when first seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<u64>,
    /// Past the schedule: waits for `consumer replay`.
    #[serde(default)]
    pub exhausted: bool,
    pub alert: Alert,
}

impl ParkedAlert {
    /// `alert` parked for `sink` now, its script log bounded ([`bounded_for_parking`]), with no
    /// redelivery made or scheduled yet.
    pub fn new(sink: &str, alert: &Alert, attempts: u32, error: &str) -> Self {
        Self {
            version: 1,
            sink: sink.to_owned(),
            parked_at: now_rfc3339(),
            attempts,
            error: error.to_owned(),
            redeliveries: 0,
            next_attempt_at: None,
            exhausted: false,
            alert: bounded_for_parking(alert),
        }
    }

    /// `alert` held for `sink`: on disk while its destination's worker still tries it, with
    /// the first redelivery of `schedule` due, so another instance takes it over if this one
    /// dies. `note` says why it is held.
    pub fn held(
        sink: &str,
        alert: &Alert,
        attempts: u32,
        note: &str,
        schedule: &[Duration],
    ) -> Self {
        Self {
            next_attempt_at: super::schedule::next_attempt(now_unix(), 0, schedule),
            ..Self::new(sink, alert, attempts, note)
        }
    }
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
    #[error("cannot lock the dead-letter directory with {path}: {reason}")]
    Lock { path: PathBuf, reason: String },
}

/// The dead-letter directory's lock, held until dropped. The operating system releases it when
/// the file is closed, also when the process dies, so a crash never leaves it taken.
#[derive(Debug)]
pub struct DeadLetterLock {
    dead_letter: DeadLetter,
    _file: File,
}

impl DeadLetterLock {
    /// The directory this lock is held on.
    pub fn dead_letter(&self) -> &DeadLetter {
        &self.dead_letter
    }
}

/// A temporary file that [`write_atomically`] leaves beside its target when the process dies
/// between writing and renaming it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempFile {
    pub path: PathBuf,
    /// When it was last written; `None` when the file system does not say.
    pub modified: Option<SystemTime>,
}

impl TempFile {
    /// How long ago it was last written; zero for a file from the future or of unknown age, so
    /// that such a file is never taken for stale.
    pub fn age(&self) -> Duration {
        self.modified
            .and_then(|m| SystemTime::now().duration_since(m).ok())
            .unwrap_or_default()
    }
}

/// `.<name>.<pid>.tmp`: the temporary name [`write_atomically`] writes under.
fn is_temp_file_name(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
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

/// A parked alert keeps this much of the start and of the end of its script log (whole lines):
/// what any destination's head and tail shows, without a copy of a log of many megabytes per
/// parked destination and recipient.
pub const PARKED_SCRIPT_LOG_PART_BYTES: usize = 64 * 1024;

/// The alert as it is parked: its script log cut to its first and last
/// [`PARKED_SCRIPT_LOG_PART_BYTES`], with a line saying how many lines were left out between.
/// The context keeps the size fields counted on the whole log.
pub fn bounded_for_parking(alert: &Alert) -> Alert {
    let mut parked = alert.clone();
    let Some(log) = alert.script_log.as_deref() else {
        return parked;
    };
    if log.len() <= 2 * PARKED_SCRIPT_LOG_PART_BYTES {
        return parked;
    }
    let mut head_end = PARKED_SCRIPT_LOG_PART_BYTES;
    while !log.is_char_boundary(head_end) {
        head_end -= 1;
    }
    // Whole lines where there are line breaks to cut at.
    if let Some(i) = log[..head_end].rfind('\n') {
        head_end = i + 1;
    }
    let mut tail_start = log.len() - PARKED_SCRIPT_LOG_PART_BYTES;
    while !log.is_char_boundary(tail_start) {
        tail_start += 1;
    }
    if let Some(i) = log[tail_start..].find('\n') {
        tail_start += i + 1;
    }
    let left_out = log[head_end..tail_start].matches('\n').count();
    parked.script_log = Some(
        format!(
            "{}----{left_out} line(s) of the script log left out when the alert was parked----\n{}",
            &log[..head_end],
            &log[tail_start..]
        )
        .into(),
    );
    parked
}

impl DeadLetter {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Parks an alert for a sink and returns the file. The name is stable per sink, event and
    /// recipient, so parking the same alert twice (a redelivery) keeps one file; it ends in a
    /// hash of the unsanitized tenant, event and sink, so ids that sanitize alike (`a/b`,
    /// `a_b`) do not overwrite each other's file. The script log is kept bounded
    /// ([`bounded_for_parking`]).
    pub async fn park(
        &self,
        sink: &str,
        alert: &Alert,
        attempts: u32,
        error: &str,
    ) -> Result<PathBuf, DeadLetterError> {
        self.write(&ParkedAlert::new(sink, alert, attempts, error))
            .await
    }

    /// Writes a parked alert under its stable name ([`Self::path_for`]) and returns the file.
    pub async fn write(&self, parked: &ParkedAlert) -> Result<PathBuf, DeadLetterError> {
        let path = self.path_for(&parked.sink, &parked.alert);
        let bytes = serde_json::to_vec_pretty(parked).map_err(|e| DeadLetterError::Write {
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

    /// The file an alert of `sink` is parked in: stable per sink, event and recipient.
    pub fn path_for(&self, sink: &str, alert: &Alert) -> PathBuf {
        let mut name = format!(
            "{}__{}__{}-{:016x}",
            file_part(&alert.tenant_id),
            file_part(&alert.event_id),
            file_part(sink),
            fnv1a(&format!("{}\n{}\n{sink}", alert.tenant_id, alert.event_id))
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
        self.dir.join(format!("{name}.json"))
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

    /// `<dir>/.lock`.
    pub fn lock_path(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Takes the directory's lock without waiting: `None` when someone else holds it (another
    /// `replay`, or the running consumer's redelivery). Creates the directory (`0700`) and the
    /// lock file (`0600`) when missing, and writes this process's id into the file, so whoever
    /// finds it taken can say who holds it ([`Self::lock_holder`]).
    pub fn try_lock(&self) -> Result<Option<DeadLetterLock>, DeadLetterError> {
        let path = self.lock_path();
        let fail = |e: &dyn std::fmt::Display| DeadLetterError::Lock {
            path: path.clone(),
            reason: e.to_string(),
        };
        create_private_dir(&self.dir).map_err(|e| fail(&e))?;
        let mut options = std::fs::OpenOptions::new();
        // Not truncated on open: the holder's process id stays readable until the lock is ours.
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&path).map_err(|e| fail(&e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(None),
            Err(TryLockError::Error(e)) => return Err(fail(&e)),
        }
        // Who holds it is for people reading the message: a failed write costs only that.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()));
        Ok(Some(DeadLetterLock {
            dead_letter: self.clone(),
            _file: file,
        }))
    }

    /// Whether a `consumer replay` holds the lock now. Looks with a shared lock, taken and given
    /// back at once: the workers of all destinations may look at the same time without getting
    /// in each other's way, and a replay starting meanwhile waits a moment for it
    /// ([`Self::lock_for_replay`]).
    pub fn replay_running(&self) -> bool {
        let Ok(file) = std::fs::File::open(self.lock_path()) else {
            // No lock file: nobody has ever replayed here.
            return false;
        };
        matches!(file.try_lock_shared(), Err(TryLockError::WouldBlock))
    }

    /// [`Self::try_lock`] for `consumer replay`: a running consumer looks at the lock for an
    /// instant before each redelivery round ([`Self::replay_running`]), so a taken lock is asked
    /// again for up to a second before it counts as another replay's.
    pub fn lock_for_replay(&self) -> Result<Option<DeadLetterLock>, DeadLetterError> {
        for _ in 0..20 {
            if let Some(lock) = self.try_lock()? {
                return Ok(Some(lock));
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        self.try_lock()
    }

    /// The process id written into the lock file by its last holder, when readable. Only
    /// meaningful while [`Self::try_lock`] finds the lock taken.
    pub fn lock_holder(&self) -> Option<u32> {
        let mut text = String::new();
        File::open(self.lock_path())
            .and_then(|mut f| f.read_to_string(&mut text))
            .ok()?;
        text.trim().parse().ok()
    }

    /// Temporary files of interrupted writes in the directory and in its `messages`
    /// subdirectory (parked raw messages), which [`Self::list`] never shows. A crash between
    /// writing one and renaming it into place leaves it: the file it was to become is either
    /// there under its final name (an earlier write) or was never written, and then the MQTT
    /// message was not acknowledged either, so the broker sends it again.
    pub fn temp_files(&self) -> Result<Vec<TempFile>, DeadLetterError> {
        let mut found = Vec::new();
        for dir in [self.dir.clone(), self.dir.join(MESSAGES_DIR)] {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(DeadLetterError::List {
                        path: dir,
                        reason: e.to_string(),
                    });
                }
            };
            for entry in entries.filter_map(Result::ok) {
                if !is_temp_file_name(&entry.file_name().to_string_lossy()) {
                    continue;
                }
                let metadata = entry.metadata().ok();
                if !metadata.as_ref().is_some_and(|m| m.is_file()) {
                    continue;
                }
                found.push(TempFile {
                    path: entry.path(),
                    modified: metadata.and_then(|m| m.modified().ok()),
                });
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(event_id: &str, log: Option<String>) -> Alert {
        Alert {
            script_log: log.map(Into::into),
            ..Alert::sample(event_id, "tenant")
        }
        .with_context(serde_json::json!({"scriptLogSizeRows": "100,000"}))
    }

    #[test]
    fn the_lock_is_held_until_dropped_and_names_its_holder() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The directory does not exist yet: taking the lock creates it.
        let dead = DeadLetter::new(dir.path().join("dead-letter"));
        let held = dead.try_lock().expect("lock").expect("nobody holds it");
        // Another open file description (another process, or the consumer's redelivery) is
        // refused at once rather than kept waiting.
        assert!(dead.try_lock().expect("lock").is_none());
        assert_eq!(dead.lock_holder(), Some(std::process::id()));
        assert_eq!(held.dead_letter().dir(), dead.dir());
        // The lock file is neither a parked alert nor a leftover.
        assert!(dead.list().expect("list").is_empty());
        assert!(dead.temp_files().expect("temp files").is_empty());
        drop(held);
        assert!(dead.try_lock().expect("lock").is_some());
    }

    #[test]
    fn temporary_files_left_by_a_crash_are_found_beside_alerts_and_raw_messages() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = DeadLetter::new(dir.path());
        let messages = dir.path().join(MESSAGES_DIR);
        std::fs::create_dir(&messages).expect("messages dir");
        for path in [
            dir.path().join("t__e__log-0123456789abcdef.json"),
            dir.path().join(".t__e__log-0123456789abcdef.json.4242.tmp"),
            messages.join(".message-0123456789abcdef.json.4242.tmp"),
            messages.join("message-0123456789abcdef.json"),
        ] {
            std::fs::write(&path, b"{}").expect("write");
        }
        let found: Vec<PathBuf> = dead
            .temp_files()
            .expect("temp files")
            .into_iter()
            .map(|t| t.path)
            .collect();
        assert_eq!(
            found,
            [
                dir.path().join(".t__e__log-0123456789abcdef.json.4242.tmp"),
                messages.join(".message-0123456789abcdef.json.4242.tmp"),
            ]
        );
        // `list` still shows only the parked alert.
        assert_eq!(dead.list().expect("list").len(), 1);
    }

    #[tokio::test]
    async fn ids_that_sanitize_alike_get_files_of_their_own() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = DeadLetter::new(dir.path());
        let a = dead
            .park("log", &alert("a/b", None), 1, "x")
            .await
            .expect("park");
        let b = dead
            .park("log", &alert("a_b", None), 1, "x")
            .await
            .expect("park");
        assert_ne!(a, b);
        assert_eq!(dead.list().expect("list").len(), 2);
        // The same alert parked again keeps its one file.
        let again = dead
            .park("log", &alert("a/b", None), 2, "x")
            .await
            .expect("park");
        assert_eq!(again, a);
        assert_eq!(DeadLetter::read(&a).expect("read").alert.event_id, "a/b");
    }

    #[tokio::test]
    async fn a_parked_alert_keeps_the_head_and_tail_of_a_long_script_log() {
        let log: String = (1..=100_000).map(|i| format!("row {i} é\n")).collect();
        assert!(log.len() > 1_000_000);
        let dir = tempfile::tempdir().expect("tempdir");
        let dead = DeadLetter::new(dir.path());
        let path = dead
            .park("log", &alert("e", Some(log)), 1, "x")
            .await
            .expect("park");
        let size = std::fs::metadata(&path).expect("metadata").len();
        assert!(
            size < 3 * PARKED_SCRIPT_LOG_PART_BYTES as u64,
            "{size} bytes"
        );
        let parked = DeadLetter::read(&path).expect("read").alert;
        let context = parked.context_for(2, 2);
        assert_eq!(context["scriptLogHead"], "row 1 é\nrow 2 é");
        assert_eq!(context["scriptLogTail"], "row 99999 é\nrow 100000 é");
        assert_eq!(context["scriptLogSizeRows"], "100,000");
        let kept = parked.script_log.as_deref().unwrap_or_default();
        assert!(
            kept.contains("line(s) of the script log left out"),
            "{}",
            &kept[..100]
        );
        // A short log is parked whole.
        let short = bounded_for_parking(&alert("e", Some("a\nb\n".into())));
        assert_eq!(short.script_log.as_deref(), Some("a\nb\n"));
    }
}
