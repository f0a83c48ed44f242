//! Which MQTT topic an event goes to.
//!
//! The default matches Butler: `qscloud/app/reload/{tenantId}` for app reload events (Butler
//! subscribes to `qscloud/#` and treats the `qscloud/app/reload` prefix as app reloads), and
//! `qscloud/event/{type}/{tenantId}` for every other event type.

use crate::envelope::Envelope;

/// Butler's default `topic.subscriptionRoot` is `qscloud/#`.
pub const DEFAULT_ROOT: &str = "qscloud";

/// Longest value a placeholder may expand to; keeps topics well under MQTT's 64 KiB limit.
const MAX_VALUE_LEN: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic template is empty")]
    Empty,
    #[error("topic template contains `{0}`, which is not allowed in a topic to publish to")]
    ForbiddenChar(char),
    #[error(
        "topic template has unknown placeholder `{{{0}}}` (known: {{tenantId}}, {{type}}, {{appId}}, {{status}})"
    )]
    UnknownPlaceholder(String),
    #[error("topic template has an unclosed `{{`")]
    Unclosed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placeholder {
    TenantId,
    Type,
    AppId,
    Status,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value(Placeholder),
}

/// A validated topic template such as `qlik/{tenantId}/{type}/{status}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

impl std::str::FromStr for TopicTemplate {
    type Err = TopicError;

    fn from_str(template: &str) -> Result<Self, TopicError> {
        if template.trim().is_empty() {
            return Err(TopicError::Empty);
        }
        if let Some(c) = template.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
            return Err(TopicError::ForbiddenChar(c));
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or(TopicError::Unclosed)? + open;
            let name = &rest[open + 1..close];
            let placeholder = match name {
                "tenantId" => Placeholder::TenantId,
                "type" => Placeholder::Type,
                "appId" => Placeholder::AppId,
                "status" => Placeholder::Status,
                other => return Err(TopicError::UnknownPlaceholder(other.to_owned())),
            };
            parts.push(Part::Value(placeholder));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }
}

impl TopicTemplate {
    pub fn render(&self, envelope: &Envelope) -> String {
        let opens_with_value = matches!(self.parts.first(), Some(Part::Value(_)));
        let topic = self.render_parts(envelope);
        if opens_with_value {
            not_reserved(topic)
        } else {
            topic
        }
    }

    fn render_parts(&self, envelope: &Envelope) -> String {
        let mut topic = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => topic.push_str(text),
                Part::Value(p) => {
                    let value = match p {
                        Placeholder::TenantId => Some(envelope.tenant_id.clone()),
                        Placeholder::Type => Some(envelope.event_type.clone()),
                        Placeholder::AppId => envelope.app_id(),
                        Placeholder::Status => envelope.status(),
                    };
                    topic.push_str(&sanitize(value.as_deref().unwrap_or("")));
                }
            }
        }
        topic
    }
}

/// How topics are chosen: Butler's scheme under a root, or a template for every event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicRouting {
    Default { root: String },
    Template(TopicTemplate),
}

impl Default for TopicRouting {
    fn default() -> Self {
        Self::Default {
            root: DEFAULT_ROOT.to_owned(),
        }
    }
}

impl TopicRouting {
    /// Butler's scheme under another root (no trailing slash, no wildcards).
    pub fn with_root(root: &str) -> Result<Self, TopicError> {
        let root = root.trim().trim_end_matches('/');
        if root.is_empty() {
            return Err(TopicError::Empty);
        }
        if let Some(c) = root.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
            return Err(TopicError::ForbiddenChar(c));
        }
        Ok(Self::Default {
            root: root.to_owned(),
        })
    }

    pub fn topic_for(&self, envelope: &Envelope) -> String {
        match self {
            Self::Default { root } => {
                let tenant = sanitize(&envelope.tenant_id);
                if envelope.is_app_reload() {
                    format!("{root}/app/reload/{tenant}")
                } else {
                    format!("{root}/event/{}/{tenant}", sanitize(&envelope.event_type))
                }
            }
            Self::Template(template) => template.render(envelope),
        }
    }
}

/// Makes an event-supplied value safe as one topic level: MQTT wildcards, level separators, NUL
/// and other control characters become `_`, so a crafted tenant id or type can neither reach
/// another subtree nor make the publish invalid. An empty value becomes `unknown`.
pub fn sanitize(value: &str) -> String {
    let cleaned: String = value
        .chars()
        .take(MAX_VALUE_LEN)
        .map(|c| match c {
            '+' | '#' | '/' => '_',
            c if c.is_control() || is_noncharacter(c) => '_',
            c => c,
        })
        .collect();
    if cleaned.is_empty() {
        "unknown".to_owned()
    } else {
        cleaned
    }
}

/// Unicode noncharacters (U+FDD0–U+FDEF and the last two code points of every plane). Valid
/// UTF-8, yet some brokers treat them as malformed and drop the connection, which would fail
/// every publish in flight on it.
fn is_noncharacter(c: char) -> bool {
    let code = u32::from(c);
    (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE
}

/// Topics starting with `$` are the broker's own (`$SYS`, `$aws`, `$share`); a value that opens
/// the topic may not make one.
fn not_reserved(mut topic: String) -> String {
    if topic.starts_with('$') {
        topic.replace_range(..1, "_");
    }
    topic
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(event_type: &str, tenant: &str) -> Envelope {
        let body = serde_json::json!({
            "specversion": "1.0", "id": "e1", "type": event_type, "tenantid": tenant,
            "toplevelresourceid": "app-1", "data": {"status": "error"}
        });
        Envelope::parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn default_topics_match_butler() {
        let routing = TopicRouting::default();
        assert_eq!(
            routing.topic_for(&envelope("com.qlik.v1.app.reload.finished", "T1")),
            "qscloud/app/reload/T1"
        );
        assert_eq!(
            routing.topic_for(&envelope("com.qlik.v1.reload.finished", "T1")),
            "qscloud/event/com.qlik.v1.reload.finished/T1"
        );
        assert_eq!(
            TopicRouting::with_root("acme/qlik/")
                .unwrap()
                .topic_for(&envelope("com.qlik.v1.app.reload.finished", "T1")),
            "acme/qlik/app/reload/T1"
        );
    }

    #[test]
    fn injected_wildcards_and_levels_are_neutralized() {
        let routing = TopicRouting::default();
        assert_eq!(
            routing.topic_for(&envelope("a/#/+", "../x\0y")),
            "qscloud/event/a____/.._x_y"
        );
        let template: TopicTemplate = "q/{tenantId}/{type}".parse().unwrap();
        assert_eq!(template.render(&envelope("t+", "x/y#")), "q/x_y_/t_");
    }

    #[test]
    fn template_renders_every_placeholder() {
        let template: TopicTemplate = "qlik/{tenantId}/{type}/{appId}/{status}".parse().unwrap();
        assert_eq!(
            template.render(&envelope("com.qlik.v1.app.reload.finished", "T1")),
            "qlik/T1/com.qlik.v1.app.reload.finished/app-1/error"
        );
    }

    #[test]
    fn missing_values_render_as_unknown() {
        let body = r#"{"specversion":"1.0","id":"e","type":"x","tenantid":"T"}"#;
        let env = Envelope::parse(body.as_bytes()).unwrap();
        let template: TopicTemplate = "{appId}/{status}".parse().unwrap();
        assert_eq!(template.render(&env), "unknown/unknown");
    }

    #[test]
    fn bad_templates_are_refused() {
        assert_eq!("".parse::<TopicTemplate>(), Err(TopicError::Empty));
        assert_eq!(
            "a/+/b".parse::<TopicTemplate>(),
            Err(TopicError::ForbiddenChar('+'))
        );
        assert_eq!(
            "a/#".parse::<TopicTemplate>(),
            Err(TopicError::ForbiddenChar('#'))
        );
        assert_eq!(
            "a/{tenant}".parse::<TopicTemplate>(),
            Err(TopicError::UnknownPlaceholder("tenant".into()))
        );
        assert_eq!(
            "a/{type".parse::<TopicTemplate>(),
            Err(TopicError::Unclosed)
        );
        assert!(TopicRouting::with_root("a/#").is_err());
    }

    #[test]
    fn noncharacters_become_underscores() {
        for c in [
            '\u{FFFE}',
            '\u{FFFF}',
            '\u{FDD0}',
            '\u{FDEF}',
            '\u{1FFFF}',
            '\u{10FFFE}',
        ] {
            assert_eq!(sanitize(&format!("a{c}b")), "a_b", "U+{:04X}", u32::from(c));
        }
        assert_eq!(sanitize("\u{FDCF}\u{FDF0}é"), "\u{FDCF}\u{FDF0}é");
    }

    #[test]
    fn a_value_cannot_open_a_reserved_topic() {
        let template: TopicTemplate = "{tenantId}/x".parse().unwrap();
        assert_eq!(template.render(&envelope("t", "$SYS")), "_SYS/x");
        let template: TopicTemplate = "a/{tenantId}".parse().unwrap();
        assert_eq!(template.render(&envelope("t", "$SYS")), "a/$SYS");
        // The default scheme always opens with its root.
        assert_eq!(
            TopicRouting::default().topic_for(&envelope("t", "$SYS")),
            "qscloud/event/t/$SYS"
        );
    }
}
