//! Script log to disk, with Butler's path scheme for Qlik Cloud:
//! `<logDirectory>/<YYYY-MM-DD>/<YYYY-MM-DD>T<HH-MM-SS>_appId=<appId>_reloadId=<reloadId>.log`,
//! the time being the event time in UTC (`2024-10-14T11-41-31`: the event time with `:`
//! replaced by `-`, to the second, as in Butler's documentation).
//!
//! The file is written to a temporary name and renamed, so a reader never sees half a log and a
//! redelivered event overwrites the same file rather than adding a second one.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

use super::{BuildError, Context, Destination, Kind, Preview, SharedSink, Sink, SinkError};
use crate::alert::Alert;
use crate::settings::{Node, Problems, block_enabled};
use crate::state::write_atomically;

/// Key path of Butler's script-log-to-disk block for Qlik Cloud.
pub const SCRIPT_LOG: &str = "Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure";

pub(crate) const KIND: Kind = Kind::Global(parse);

/// The sink's name.
const SCRIPT_LOG_SINK: &str = "script-log-disk";

/// `Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure` (`enable`, `logDirectory`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptLogDiskConfig {
    pub log_directory: PathBuf,
}

fn parse(butler: &Node<'_>, p: &mut Problems) -> Vec<Arc<dyn Destination>> {
    let node = butler.at("scriptLog.storeOnDisk.qsCloud.appReloadFailure");
    if !block_enabled(&node, p) {
        return vec![];
    }
    match node.child("logDirectory").real_string(p) {
        Some(dir) => vec![Arc::new(ScriptLogDiskConfig {
            log_directory: PathBuf::from(dir),
        })],
        None => vec![],
    }
}

impl Destination for ScriptLogDiskConfig {
    fn sink_name(&self) -> String {
        SCRIPT_LOG_SINK.to_owned()
    }

    fn summary(&self, _config: &Context<'_>) -> Option<String> {
        Some(format!(
            "script log to disk under {}",
            self.log_directory.display()
        ))
    }

    fn build(&self, _: &Context<'_>, _: &reqwest::Client) -> Result<SharedSink, BuildError> {
        Ok(Arc::new(ScriptLogDiskSink::new(self.clone())))
    }
}

#[derive(Debug)]
pub struct ScriptLogDiskSink {
    config: ScriptLogDiskConfig,
}

impl ScriptLogDiskSink {
    pub fn new(config: ScriptLogDiskConfig) -> Self {
        Self { config }
    }

    /// Where the script log of this alert goes.
    pub fn path_for(&self, alert: &Alert) -> PathBuf {
        path_for(&self.config.log_directory, alert)
    }
}

fn event_time(alert: &Alert) -> OffsetDateTime {
    alert
        .event_time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
        .to_offset(time::UtcOffset::UTC)
}

/// Keeps ids usable as file name parts whatever a (hostile or broken) event carries.
fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

pub fn path_for(dir: &Path, alert: &Alert) -> PathBuf {
    let time = event_time(alert);
    let day = time
        .format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_else(|_| "unknown-date".into());
    let stamp = time
        .format(format_description!(
            "[year]-[month]-[day]T[hour]-[minute]-[second]"
        ))
        .unwrap_or_else(|_| "unknown-time".into());
    let app = file_safe(alert.app_id.as_deref().unwrap_or("unknown"));
    let reload = file_safe(alert.reload_id.as_deref().unwrap_or("unknown"));
    dir.join(&day)
        .join(format!("{stamp}_appId={app}_reloadId={reload}.log"))
}

/// What goes in the file when the tenant API could not give the script log: the alert still
/// leaves a trace, and says what is missing.
fn placeholder(alert: &Alert) -> String {
    let missing: Vec<&str> = alert
        .context
        .get("missing")
        .and_then(serde_json::Value::as_array)
        .map(|m| m.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    let missing = if missing.is_empty() {
        String::new()
    } else {
        format!(" ({})", missing.join("; "))
    };
    format!(
        "Script log not available: it could not be fetched from the tenant API{missing}.\n\
         Tenant: {}\nApp: {} ({})\nReload: {}\nError: {}\n",
        alert.tenant_id,
        alert.field("appName").unwrap_or("?"),
        alert.app_id.as_deref().unwrap_or("?"),
        alert.reload_id.as_deref().unwrap_or("?"),
        alert.field("errorMessage").unwrap_or("?"),
    )
}

/// What is written for an alert: the script log, or (`false`) what the event says instead.
struct File {
    path: PathBuf,
    content: String,
    script_log: bool,
}

impl ScriptLogDiskSink {
    /// The file for an alert; `None` for a digest, which carries no script log (its apps' logs
    /// were stored when each alert came).
    fn file(&self, alert: &Alert) -> Option<File> {
        if alert.digest.is_some() {
            return None;
        }
        let (content, script_log) = match &alert.script_log {
            Some(log) => (log.to_string(), true),
            None => (placeholder(alert), false),
        };
        Some(File {
            path: self.path_for(alert),
            content,
            script_log,
        })
    }
}

impl Sink for ScriptLogDiskSink {
    fn name(&self) -> &str {
        SCRIPT_LOG_SINK
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let Some(file) = self.file(alert) else {
            return Ok(());
        };
        if !file.script_log {
            tracing::warn!(
                "{}: no script log to store; writing what the event says instead",
                alert.describe()
            );
        }
        write_atomically(&file.path, file.content.as_bytes())
            .await
            .map_err(|e| SinkError::Transient(format!("{}: {e}", file.path.display())))
    }

    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        Ok(match self.file(alert) {
            None => Preview::Nothing("a digest carries no script log".to_owned()),
            Some(file) => Preview::File {
                bytes: file.content.len(),
                what: if file.script_log {
                    "the script log from the tenant API".to_owned()
                } else {
                    "no script log (it could not be fetched): what the event says instead"
                        .to_owned()
                },
                path: file.path,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(time: Option<&str>) -> Alert {
        Alert {
            app_id: Some("7c1d2e3f-4a5b".into()),
            reload_id: Some("674ab6e2".into()),
            event_time: time.map(str::to_owned),
            ..Alert::sample("e1", "t")
        }
    }

    #[test]
    fn butler_path_scheme() {
        let p = path_for(Path::new("/logs"), &alert(Some("2026-11-30T07:06:22Z")));
        assert_eq!(
            p,
            Path::new(
                "/logs/2026-11-30/2026-11-30T07-06-22_appId=7c1d2e3f-4a5b_reloadId=674ab6e2.log"
            )
        );
        // Offsets and fractions normalize to UTC seconds.
        let p = path_for(
            Path::new("d"),
            &alert(Some("2026-11-30T23:30:00.123+01:00")),
        );
        assert!(
            p.ends_with("2026-11-30/2026-11-30T22-30-00_appId=7c1d2e3f-4a5b_reloadId=674ab6e2.log")
        );
    }

    #[test]
    fn hostile_ids_stay_inside_the_directory() {
        let mut a = alert(Some("2026-11-30T07:06:22Z"));
        a.app_id = Some("../../etc/passwd".into());
        let p = path_for(Path::new("/logs"), &a);
        assert!(p.starts_with("/logs/2026-11-30"));
        assert!(!p.to_string_lossy().contains(".."));
    }

    #[tokio::test]
    async fn a_digest_writes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sink = ScriptLogDiskSink::new(ScriptLogDiskConfig {
            log_directory: dir.path().to_owned(),
        });
        let part = crate::digest::Digest {
            window: "w".into(),
            window_start: "s".into(),
            window_end: "e".into(),
            total: 0,
            part: 1,
            parts: 1,
            entries: Vec::new(),
        };
        sink.send(&Alert::for_digest("t", None, part))
            .await
            .expect("nothing to do");
        let written = std::fs::read_dir(dir.path()).expect("read").count();
        assert_eq!(written, 0);
    }

    #[test]
    fn refuses_notices() {
        let sink = ScriptLogDiskSink::new(ScriptLogDiskConfig {
            log_directory: "/nonexistent".into(),
        });
        let notice = Alert::sample_notice();
        assert!(!sink.accepts(&notice));
        assert!(sink.accepts(&alert(None)));
    }
}
