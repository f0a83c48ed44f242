//! What a destination would receive for an alert, rendered by the very code its `send` uses
//! ([`super::Sink::preview`]), for `consumer preview`. Nothing in here sends or stores anything.

use std::fmt;
use std::path::PathBuf;

use serde_json::Value;

/// One destination's rendered alert.
#[derive(Debug, Clone, PartialEq)]
pub enum Preview {
    /// Slack, Teams: the JSON body posted to the incoming webhook.
    Json(Value),
    /// A generic webhook: the JSON body and the names of the headers sent with it. Header
    /// values are never kept here: they may be secrets.
    Http {
        body: Value,
        header_names: Vec<String>,
    },
    /// One recipient's email.
    Email(Box<EmailPreview>),
    /// The MQTT re-publish.
    Mqtt {
        topic: String,
        retain: bool,
        payload: Value,
    },
    /// The log line: its message and its fields, as recorded (quoted and escaped).
    Log {
        message: String,
        fields: Vec<(String, String)>,
    },
    /// A file written to disk (the script log).
    File {
        path: PathBuf,
        bytes: usize,
        what: String,
    },
    /// Nothing would be sent or written, for the reason given.
    Nothing(String),
}

/// An email as it would be sent to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailPreview {
    /// `From`, `To`, `Subject`, `Message-ID`, the priority headers, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The `text/plain` part.
    pub text: String,
    /// The `text/html` part.
    pub html: String,
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

impl fmt::Display for Preview {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Preview::Json(body) => writeln!(f, "{}", pretty(body)),
            Preview::Http { body, header_names } => {
                writeln!(f, "POST with JSON body")?;
                for name in header_names {
                    writeln!(f, "{name}: ***")?;
                }
                writeln!(f)?;
                writeln!(f, "{}", pretty(body))
            }
            Preview::Email(email) => {
                for (name, value) in &email.headers {
                    writeln!(f, "{name}: {value}")?;
                }
                writeln!(f, "\n--- text/plain ---")?;
                writeln!(f, "{}", email.text.trim_end())?;
                writeln!(f, "--- text/html ---")?;
                writeln!(f, "{}", email.html.trim_end())
            }
            Preview::Mqtt {
                topic,
                retain,
                payload,
            } => {
                writeln!(f, "topic: {topic}")?;
                writeln!(f, "retain: {retain}, QoS 1")?;
                writeln!(f, "{}", pretty(payload))
            }
            Preview::Log { message, fields } => {
                writeln!(f, "WARN {message}")?;
                for (name, value) in fields {
                    writeln!(f, "  {name}={value}")?;
                }
                Ok(())
            }
            Preview::File { path, bytes, what } => {
                writeln!(f, "would write {} ({bytes} bytes: {what})", path.display())
            }
            Preview::Nothing(why) => writeln!(f, "nothing: {why}"),
        }
    }
}
