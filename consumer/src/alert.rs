//! The alert: what a failed reload turns into, and what every sink receives.
//!
//! The template context is kept as a JSON object with Butler's field names (built by
//! [`crate::enrich`]), not as a Rust struct, for two reasons: a parked alert must read back
//! unchanged by a later version of the consumer, and Handlebars templates see exactly the keys
//! that were serialized.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::{APP_NAME_MAX_CHARS, DIGEST_EVENT_TYPE, Digest, DigestEntry, cut, error_line};
use crate::script_log::{CHAT_SCRIPT_LOG_MAX_CHARS, group_thousands, script_log_parts};

/// One failed reload, ready for delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The Qlik event id (`id` / `eventId`); dedupe key together with the tenant.
    pub event_id: String,
    /// `com.qlik.v1.app.reload.finished` or `com.qlik.v1.reload.finished`.
    pub event_type: String,
    pub tenant_id: String,
    pub app_id: Option<String>,
    pub reload_id: Option<String>,
    /// The event time as sent (RFC 3339), used for the script log file name.
    pub event_time: Option<String>,
    /// Tags of the app (from the tenant's items API), for Butler's `alertEnableByTag`.
    #[serde(default)]
    pub app_tags: Vec<String>,
    /// The whole script log when it could be fetched. Sinks cut their own head and tail from it,
    /// because Butler configures the line counts per destination. Shared, not copied, between
    /// the copies of an alert (one per email recipient). A parked alert keeps its head and tail
    /// only ([`crate::delivery::dead_letter`]).
    #[serde(default)]
    pub script_log: Option<Arc<str>>,
    /// The template context with Butler's field names (appName, appUrl, reloadId, …).
    pub context: Map<String, Value>,
    /// For sinks that send each recipient a copy of their own (email): the recipient of this
    /// copy. Set by [`crate::delivery`] and kept in parked alerts, so `replay` re-sends to the
    /// recipient that failed and to no one else. `None` everywhere else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
    /// Set on a digest ([`crate::digest`]): the alerts it lists. The destination renders its
    /// digest message instead of a single alert's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// Set on a notice from the consumer itself (the webhook watchdog), not about a reload:
    /// chat and email destinations show its title and text; other destinations do not take it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
}

/// What the consumer has to tell a tenant's people about Qlik's side (a webhook to the relay
/// that Qlik disabled, or none at all). Plain text: each destination escapes it for its markup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// One line, e.g. "Qlik disabled the webhook to the relay".
    pub title: String,
    /// Several lines: what was found and what was done.
    pub text: String,
}

#[cfg(test)]
impl Alert {
    /// An alert about event `event_id` (an app reload) of tenant `tenant_id`, nothing else
    /// known, for unit tests; each sets what it needs: `Alert { app_id: …, ..Alert::sample(…) }`.
    pub(crate) fn sample(event_id: &str, tenant_id: &str) -> Alert {
        Alert::new(event_id, qlik_events::APP_RELOAD_FINISHED, tenant_id)
    }

    /// This alert with `context` (a JSON object) as its template context.
    pub(crate) fn with_context(self, context: Value) -> Alert {
        let Value::Object(context) = context else {
            panic!("a template context is a JSON object: {context}");
        };
        Alert { context, ..self }
    }

    /// A watchdog notice for tenant `t`, for the sinks' unit tests.
    pub(crate) fn sample_notice() -> Alert {
        Alert::for_notice(
            "t",
            "watchdog-1",
            Notice {
                title: "Qlik disabled the webhook to the relay".into(),
                text: "text".into(),
            },
        )
    }
}

impl Alert {
    /// This alert as a digest lists it.
    pub fn digest_entry(&self) -> DigestEntry {
        let alert = self;
        let text = |key: &str| alert.field(key).map(str::to_owned);
        let time = alert
            .context
            .get("executionStopTime")
            .and_then(|t| t.get("stopTimeUTC"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .or_else(|| alert.event_time.clone());
        let error = text("errorMessage").unwrap_or_default();
        DigestEntry {
            event_id: alert.event_id.clone(),
            tenant_id: alert.tenant_id.clone(),
            tenant_comment: text("tenantComment"),
            app_id: alert.app_id.clone(),
            app_name: cut(
                &text("appName")
                    .or_else(|| alert.app_id.clone())
                    .unwrap_or_else(|| "(unknown app)".to_owned()),
                APP_NAME_MAX_CHARS,
            ),
            app_url: text("appUrl"),
            reload_id: alert.reload_id.clone(),
            time,
            error_line: error_line(&error),
        }
    }
}

impl Alert {
    /// A digest part for one destination, as delivery carries it: `sink` and `recipient` say
    /// whose it is; the event id names the window and part, so each part has a parked-alert
    /// file of its own.
    pub fn for_digest(tenant_id: &str, recipient: Option<&str>, digest: Digest) -> Alert {
        let mut context = digest.context();
        context.insert("tenantId".into(), tenant_id.into());
        let event_id = format!("digest-{}-{}of{}", digest.window, digest.part, digest.parts);
        Alert {
            event_time: Some(digest.window_end.clone()),
            context,
            recipient: recipient.map(str::to_owned),
            digest: Some(digest),
            ..Alert::new(&event_id, DIGEST_EVENT_TYPE, tenant_id)
        }
    }
}

/// The `eventType` of a notice.
pub const NOTICE_EVENT_TYPE: &str = "qscloud.consumer.watchdog";

impl Alert {
    /// An alert about event `event_id` of type `event_type` from tenant `tenant_id`, nothing
    /// else known yet: the rest is set with `Alert { …, ..Alert::new(…) }`.
    pub fn new(event_id: &str, event_type: &str, tenant_id: &str) -> Alert {
        Alert {
            event_id: event_id.to_owned(),
            event_type: event_type.to_owned(),
            tenant_id: tenant_id.to_owned(),
            app_id: None,
            reload_id: None,
            event_time: None,
            app_tags: Vec::new(),
            script_log: None,
            context: Map::new(),
            recipient: None,
            digest: None,
            notice: None,
        }
    }

    /// A notice for the destinations of `tenant_id`; `key` names it (and its parked-alert file).
    pub fn for_notice(tenant_id: &str, key: &str, notice: Notice) -> Alert {
        let mut context = Map::new();
        context.insert("tenantId".into(), tenant_id.into());
        context.insert("title".into(), notice.title.clone().into());
        context.insert("text".into(), notice.text.clone().into());
        // Not an event of Qlik's: no app, no reload, nothing to time a delivery from.
        Alert {
            context,
            notice: Some(notice),
            ..Alert::new(key, NOTICE_EVENT_TYPE, tenant_id)
        }
    }
}

impl Alert {
    /// A short, secret-free description for log lines. The ids come from the event, so they
    /// are quoted and escaped (`Debug`): a line break in one cannot forge a log line.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "event {:?} tenant {:?} app {:?} reload {:?}",
            self.event_id,
            self.tenant_id,
            self.app_id.as_deref().unwrap_or("?"),
            self.reload_id.as_deref().unwrap_or("?")
        );
        if let Some(recipient) = &self.recipient {
            text.push_str(&format!(" to {recipient:?}"));
        }
        text
    }

    /// This alert addressed to one recipient of a fanned-out sink.
    pub fn for_recipient(&self, recipient: &str) -> Alert {
        Alert {
            recipient: Some(recipient.to_owned()),
            ..self.clone()
        }
    }

    /// A context string field, when present and non-empty.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.context
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The JSON document machine destinations (webhook, MQTT) receive: the context with
    /// Butler's field names, plus `eventId`, `eventType`, `tenantId`, `appId`, `reloadId` and
    /// `eventTime` where the context lacks them. A digest part's is [`digest_payload`].
    pub fn payload(&self) -> Value {
        if let Some(digest) = &self.digest {
            return digest_payload(digest);
        }
        let mut body = self.context.clone();
        let ids = [
            ("eventId", Some(&self.event_id)),
            ("eventType", Some(&self.event_type)),
            ("tenantId", Some(&self.tenant_id)),
            ("appId", self.app_id.as_ref()),
            ("reloadId", self.reload_id.as_ref()),
            ("eventTime", self.event_time.as_ref()),
        ];
        for (key, value) in ids {
            if let Some(value) = value {
                body.entry(key)
                    .or_insert_with(|| Value::String(value.clone()));
            }
        }
        Value::Object(body)
    }

    /// The template context for a destination that shows `head` / `tail` script log lines:
    /// the shared context with `scriptLogHead`, `scriptLogTail` and their counts for this
    /// destination (Butler configures the counts per destination). The size fields are kept as
    /// enrichment counted them on the whole log (a parked alert keeps only the log's head and
    /// tail), and counted here only when the context has none.
    /// Without a script log the rest is left as built; its `missing` field then says why. The
    /// counts are this destination's in any case, so a template never states another's.
    pub fn context_for(&self, head: usize, tail: usize) -> Map<String, Value> {
        let mut context = self.context.clone();
        context.insert("scriptLogHeadCount".into(), head.into());
        context.insert("scriptLogTailCount".into(), tail.into());
        if let Some(log) = &self.script_log {
            let parts = script_log_parts(log, head, tail);
            context.insert("scriptLogHead".into(), Value::String(parts.head));
            context.insert("scriptLogTail".into(), Value::String(parts.tail));
            let rows = Value::String(group_thousands(parts.rows as u64));
            let characters = Value::String(group_thousands(parts.characters as u64));
            for (key, value) in [
                ("scriptLogSize", &rows),
                ("scriptLogSizeRows", &rows),
                ("scriptLogSizeCharacters", &characters),
            ] {
                context.entry(key).or_insert_with(|| value.clone());
            }
        }
        context
    }

    /// The context for a destination with Butler's `basicContentOnly`: the shared context
    /// without the script log, even when another destination had it fetched.
    pub fn basic_context(&self) -> Map<String, Value> {
        let mut context = self.context.clone();
        context.retain(|key, _| !key.starts_with("scriptLog"));
        context
    }

    /// [`Self::context_for`] for Slack and Teams, whose text fields have a size limit: the
    /// head keeps its start and the tail its end, cut to Butler's limit and marked as cut.
    pub fn chat_context_for(&self, head: usize, tail: usize) -> Map<String, Value> {
        let mut context = self.context_for(head, tail);
        for (key, keep_end) in [("scriptLogHead", false), ("scriptLogTail", true)] {
            if let Some(Value::String(text)) = context.get_mut(key) {
                let chars = text.chars().count();
                if chars > CHAT_SCRIPT_LOG_MAX_CHARS {
                    *text = if keep_end {
                        let kept: String = text
                            .chars()
                            .skip(chars - CHAT_SCRIPT_LOG_MAX_CHARS)
                            .collect();
                        format!("{TRUNCATED}\n{kept}")
                    } else {
                        let kept: String = text.chars().take(CHAT_SCRIPT_LOG_MAX_CHARS).collect();
                        format!("{kept}\n{TRUNCATED}")
                    };
                }
            }
        }
        context
    }
}

const TRUNCATED: &str = "----Script log truncated----";

/// A digest part for machine destinations: `eventType` ([`crate::digest::DIGEST_EVENT_TYPE`]),
/// `window`, `windowStart`, `windowEnd`, `total`, `part`, `parts` and `alerts` (the entries,
/// camelCase). Not the template context: a receiver parses it, so it has no display-only keys.
pub fn digest_payload(digest: &crate::digest::Digest) -> Value {
    let mut body = Map::new();
    body.insert("eventType".into(), crate::digest::DIGEST_EVENT_TYPE.into());
    if let Ok(Value::Object(fields)) = serde_json::to_value(digest) {
        for (key, value) in fields {
            let key = if key == "entries" {
                "alerts".into()
            } else {
                key
            };
            body.insert(key, value);
        }
    }
    Value::Object(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_for_overrides_script_log_fields_only_when_there_is_a_log() {
        let mut context = Map::new();
        context.insert("appName".into(), "Sales".into());
        context.insert("scriptLogHead".into(), "".into());
        context.insert("scriptLogTailCount".into(), 10.into());
        let mut alert = Alert {
            context,
            ..Alert::sample("e", "x")
        };
        assert_eq!(alert.context_for(1, 1)["scriptLogHead"], "");
        // The destination's own count, even without a log (Butler's default was 10).
        assert_eq!(alert.context_for(3, 20)["scriptLogTailCount"], 20);
        alert.script_log = Some("l1\nl2\nl3".into());
        let c = alert.context_for(1, 2);
        assert_eq!(c["scriptLogHead"], "l1");
        assert_eq!(c["scriptLogTail"], "l2\nl3");
        assert_eq!(c["scriptLogTailCount"], 2);
        assert_eq!(c["scriptLogSizeRows"], "3");
        assert_eq!(c["appName"], "Sales");
        alert.script_log = Some("x".repeat(5000).into());
        let chat = alert.chat_context_for(1, 1);
        let head = chat["scriptLogHead"].as_str().unwrap();
        assert!(head.starts_with("xxx") && head.ends_with(TRUNCATED));
        assert_eq!(
            head.chars().count(),
            CHAT_SCRIPT_LOG_MAX_CHARS + 1 + TRUNCATED.len()
        );
    }
}
