//! Log destination: one `warn` line per failed reload, so an operator sees every alert in the
//! consumer's own log even when no chat destination is configured.
//!
//! Every value comes from the event or the tenant API, so each is recorded as a field in its
//! quoted and escaped (`Debug`) form: a line break in an app name or error message cannot start
//! a forged log line.

use std::sync::Arc;

use super::{
    BuildError, Context, Destination, Kind, Preview, SharedSink, Sink, SinkError, TenantApi,
};
use crate::alert::Alert;
use crate::settings::{Node, Problems};

pub(crate) const KIND: Kind = Kind::Global(parse);

/// The sink's name.
const LOG_SINK: &str = "log";

/// Extension `Butler.qlikSenseCloud.consumer.destinations.log.enable` (default true). No
/// further settings.
#[derive(Debug, Default)]
pub struct LogDestination;

fn parse(butler: &Node<'_>, p: &mut Problems) -> Vec<Arc<dyn Destination>> {
    let enable = super::extension_key(butler, "log")
        .child("enable")
        .bool_or(p, true);
    if enable {
        vec![Arc::new(LogDestination)]
    } else {
        vec![]
    }
}

impl Destination for LogDestination {
    fn sink_name(&self) -> String {
        LOG_SINK.to_owned()
    }

    fn summary(&self, _config: &Context<'_>) -> Option<String> {
        Some("log".to_owned())
    }

    /// The line shows what the alert carries; it asks for nothing of its own, so it does not
    /// undo the other destinations' `basicContentOnly`.
    fn tenant_api(&self) -> Option<TenantApi> {
        None
    }

    fn build(&self, _: &Context<'_>, _: &reqwest::Client) -> Result<SharedSink, BuildError> {
        Ok(Arc::new(LogSink::new()))
    }
}

#[derive(Debug, Default)]
pub struct LogSink;

impl LogSink {
    pub fn new() -> Self {
        Self
    }
}

/// What one alert's line holds: [`Sink::send`] logs it, [`Sink::preview`] shows it.
enum Line<'a> {
    Notice {
        event_id: &'a str,
        tenant: &'a str,
        title: &'a str,
        text: &'a str,
    },
    Digest {
        event_id: &'a str,
        tenant: &'a str,
        digest: String,
    },
    Reload {
        event_id: &'a str,
        tenant: &'a str,
        app_id: &'a str,
        app_name: &'a str,
        reload_id: &'a str,
        status: &'a str,
        error_code: &'a str,
        error_message: &'a str,
        app_url: &'a str,
    },
}

const NOTICE: &str = "notice from the consumer";
const DIGEST: &str = "Qlik Cloud app reloads failed (digest)";
const RELOAD: &str = "Qlik Cloud app reload failed";

impl<'a> Line<'a> {
    fn of(alert: &'a Alert) -> Self {
        let event_id = alert.event_id.as_str();
        let tenant = alert.tenant_id.as_str();
        if let Some(notice) = &alert.notice {
            return Line::Notice {
                event_id,
                tenant,
                title: &notice.title,
                text: &notice.text,
            };
        }
        if let Some(digest) = &alert.digest {
            return Line::Digest {
                event_id,
                tenant,
                digest: digest.describe(),
            };
        }
        Line::Reload {
            event_id,
            tenant,
            app_id: alert.app_id.as_deref().unwrap_or(""),
            app_name: alert.field("appName").unwrap_or(""),
            reload_id: alert.reload_id.as_deref().unwrap_or(""),
            status: alert.field("status").unwrap_or(""),
            error_code: alert.field("errorCode").unwrap_or(""),
            error_message: alert.field("errorMessage").unwrap_or(""),
            app_url: alert.field("appUrl").unwrap_or(""),
        }
    }

    /// The message and the fields, each value in the form the line records it (escaped with
    /// `Debug`, the digest's description as it is).
    fn preview(&self) -> Preview {
        let field = |name: &str, value: &dyn std::fmt::Debug| (name.to_owned(), format!("{value:?}"));
        let (message, fields) = match self {
            Line::Notice {
                event_id,
                tenant,
                title,
                text,
            } => (
                NOTICE,
                vec![
                    field("event_id", event_id),
                    field("tenant", tenant),
                    field("title", title),
                    field("text", text),
                ],
            ),
            Line::Digest {
                event_id,
                tenant,
                digest,
            } => (
                DIGEST,
                vec![
                    field("event_id", event_id),
                    field("tenant", tenant),
                    // Recorded with `%` (its own one-line description), not `?`.
                    ("digest".to_owned(), digest.to_string()),
                ],
            ),
            Line::Reload {
                event_id,
                tenant,
                app_id,
                app_name,
                reload_id,
                status,
                error_code,
                error_message,
                app_url,
            } => (
                RELOAD,
                vec![
                    field("event_id", event_id),
                    field("tenant", tenant),
                    field("app_id", app_id),
                    field("app_name", app_name),
                    field("reload_id", reload_id),
                    field("status", status),
                    field("error_code", error_code),
                    field("error_message", error_message),
                    field("app_url", app_url),
                ],
            ),
        };
        Preview::Log {
            message: message.to_owned(),
            fields,
        }
    }
}

impl Sink for LogSink {
    fn name(&self) -> &str {
        LOG_SINK
    }

    /// Everything, notices from the consumer included: the log is read by people too.
    fn accepts(&self, _alert: &Alert) -> bool {
        true
    }

    /// The log never asks for digests, but a digest part handed to it (a replay, another
    /// layer's choice) is still one line, not a line per app.
    /// A notice from the consumer itself is one line too, with its title and text as fields.
    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        match Line::of(alert) {
            // `?`: the text has line breaks of its own and values from Qlik (a webhook's name,
            // its `disabledReason`); quoted and escaped, they stay on this line.
            Line::Notice {
                event_id,
                tenant,
                title,
                text,
            } => tracing::warn!(
                target: "consumer::alert",
                event_id = ?event_id,
                tenant = ?tenant,
                title = ?title,
                text = ?text,
                "{NOTICE}"
            ),
            Line::Digest {
                event_id,
                tenant,
                digest,
            } => tracing::warn!(
                target: "consumer::alert",
                event_id = ?event_id,
                tenant = ?tenant,
                digest = %digest,
                "{DIGEST}"
            ),
            Line::Reload {
                event_id,
                tenant,
                app_id,
                app_name,
                reload_id,
                status,
                error_code,
                error_message,
                app_url,
            } => tracing::warn!(
                target: "consumer::alert",
                event_id = ?event_id,
                tenant = ?tenant,
                app_id,
                app_name,
                reload_id,
                status,
                error_code,
                error_message,
                app_url,
                "{RELOAD}"
            ),
        }
        Ok(())
    }

    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        Ok(Line::of(alert).preview())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut out) = self.0.lock() {
                out.extend_from_slice(buf);
            }
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the log sink writes for `alert` (then `also` logs), as text.
    fn logged(alert: &Alert, also: impl FnOnce()) -> String {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime");
            runtime
                .block_on(LogSink::new().send(alert))
                .expect("logged");
            also();
        });
        String::from_utf8(out.0.lock().expect("lock").clone()).expect("UTF-8")
    }

    #[test]
    fn event_values_cannot_forge_a_log_line() {
        let forged = "x\n2026-01-01T00:00:00Z  INFO consumer: forged";
        let alert = Alert {
            app_id: Some(forged.into()),
            ..Alert::sample(forged, forged)
        }
        .with_context(serde_json::json!({"appName": forged, "errorMessage": forged}));
        let text = logged(&alert, || {
            tracing::warn!("{}", alert.describe());
        });
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.lines().any(|l| l.starts_with("2026-01-01")), "{text}");
    }

    #[test]
    fn a_digest_is_one_line() {
        let forged = "x\n2026-01-01T00:00:00Z  INFO consumer: forged";
        let entry = crate::digest::DigestEntry {
            event_id: forged.into(),
            tenant_id: "t".into(),
            tenant_comment: None,
            app_id: Some(forged.into()),
            app_name: forged.into(),
            app_url: None,
            reload_id: None,
            time: None,
            error_line: forged.into(),
        };
        let digest = crate::digest::split("w", "s", "e", vec![entry.clone(), entry], |_| true);
        let alert = Alert::for_digest("t", None, digest[0].clone());
        let text = logged(&alert, || {});
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains("reloads failed (digest)"), "{text}");
        assert!(text.contains("2 of 2 alerts"), "{text}");
    }

    #[test]
    fn a_notice_is_one_line_with_its_title_and_text() {
        let forged = "x\n2026-01-01T00:00:00Z  INFO consumer: forged";
        let alert = Alert::for_notice(
            "t",
            "watchdog-1",
            crate::alert::Notice {
                title: "Qlik disabled the webhook to the relay".into(),
                text: format!("disabledReason: {forged}\nRe-enabled."),
            },
        );
        assert!(LogSink::new().accepts(&alert));
        let text = logged(&alert, || {});
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(" WARN "), "{text}");
        assert!(text.contains("notice from the consumer"), "{text}");
        assert!(
            text.contains("title=\"Qlik disabled the webhook to the relay\""),
            "{text}"
        );
        assert!(text.contains("Re-enabled."), "{text}");
    }
}
