//! Slack incoming webhook, as Butler's `alert.slackNotification.reloadAppFailure`:
//! `messageType: basic` posts a header with the rendered `basicMsgTemplate` and buttons to the
//! QMC and hub; `formatted` posts the rendered `templateFile` (Slack Block Kit JSON).
//! `channel`, `fromUser` and `iconEmoji` are added as `channel`, `username` and `icon_emoji`
//! when the message does not set them (legacy webhooks honour them, app webhooks ignore them).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::template::{render_json, render_text};
use super::{BuildError, Sink, SinkError, http};
use crate::alert::Alert;
use crate::config::{AlertEnableByTag, MessageType, SecretUrl, SlackAlert, TenantConfig};

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub tenant_id: String,
    pub webhook_url: SecretUrl,
    pub message_type: MessageType,
    pub basic_msg_template: String,
    /// Contents of `templateFile`, read at start-up so a missing file fails early.
    pub template: Option<String>,
    pub template_file: Option<PathBuf>,
    pub channel: Option<String>,
    pub from_user: Option<String>,
    pub icon_emoji: Option<String>,
    pub head_script_log_lines: usize,
    pub tail_script_log_lines: usize,
    pub rate_limit: Duration,
    pub alert_enable_by_tag: AlertEnableByTag,
}

pub const DEFAULT_BASIC_TEMPLATE: &str = "Qlik Cloud app reload failed: \"{{appName}}\"";

impl SlackConfig {
    pub fn from_tenant(tenant: &TenantConfig, slack: &SlackAlert) -> Result<Self, BuildError> {
        let common = &slack.common;
        let key = format!(
            "{}.alert.slackNotification.reloadAppFailure",
            tenant.key_path
        );
        Ok(Self {
            tenant_id: tenant.id.clone(),
            webhook_url: common.webhook_url.clone(),
            message_type: common.message_type,
            basic_msg_template: common
                .basic_msg_template
                .clone()
                .unwrap_or_else(|| DEFAULT_BASIC_TEMPLATE.to_owned()),
            template: read_template(common.message_type, common.template_file.as_ref(), &key)?,
            template_file: common.template_file.clone(),
            channel: slack.channel.clone(),
            from_user: slack.from_user.clone(),
            icon_emoji: slack.icon_emoji.clone(),
            head_script_log_lines: common.head_script_log_lines,
            tail_script_log_lines: common.tail_script_log_lines,
            rate_limit: common.rate_limit,
            alert_enable_by_tag: common.alert_enable_by_tag.clone(),
        })
    }
}

/// Reads a `formatted` message's template file; `basic` messages need none.
pub(super) fn read_template(
    message_type: MessageType,
    file: Option<&PathBuf>,
    key: &str,
) -> Result<Option<String>, BuildError> {
    let (MessageType::Formatted, Some(path)) = (message_type, file) else {
        return Ok(None);
    };
    let refuse = |reason: String| BuildError::Template {
        key: format!("{key}.templateFile"),
        path: path.display().to_string(),
        reason,
    };
    let template = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
    // A broken template fails at start-up, not at the first failed reload.
    super::template::check(&template).map_err(|e| refuse(e.to_string()))?;
    Ok(Some(template))
}

pub struct SlackSink {
    name: String,
    config: SlackConfig,
    client: reqwest::Client,
}

impl SlackSink {
    pub fn new(config: SlackConfig, client: reqwest::Client) -> Self {
        Self {
            name: format!("slack:{}", config.tenant_id),
            config,
            client,
        }
    }

    /// The JSON body this sink posts for an alert.
    pub fn message(&self, alert: &Alert) -> Result<Value, SinkError> {
        let c = &self.config;
        let context = alert.chat_context_for(c.head_script_log_lines, c.tail_script_log_lines);
        let mut message = match (c.message_type, &c.template) {
            (MessageType::Formatted, Some(template)) => render_json(template, &context)
                .map_err(|e| SinkError::Permanent(format!("Slack template: {e}")))?,
            _ => {
                let text = render_text(&c.basic_msg_template, &context)
                    .map_err(|e| SinkError::Permanent(format!("Slack basicMsgTemplate: {e}")))?;
                basic_message(&text, alert)
            }
        };
        if let Some(object) = message.as_object_mut() {
            let extras = [
                ("channel", &c.channel),
                ("username", &c.from_user),
                ("icon_emoji", &c.icon_emoji),
            ];
            for (key, value) in extras {
                if let Some(value) = value {
                    object
                        .entry(key)
                        .or_insert_with(|| Value::String(value.clone()));
                }
            }
        }
        Ok(message)
    }
}

fn button(text: &str, url: &str) -> Value {
    json!({
        "type": "button",
        "text": {"type": "plain_text", "emoji": true, "text": text},
        "style": "primary",
        "url": url,
    })
}

/// Butler's basic Slack message: header, divider, buttons to what the alert links to. `text`
/// is the notification fallback Slack shows where blocks are not rendered.
fn basic_message(text: &str, alert: &Alert) -> Value {
    let buttons: Vec<Value> = [
        ("Open QMC", "qlikSenseQMC"),
        ("Open Hub", "qlikSenseHub"),
        ("Open app", "appUrl"),
    ]
    .into_iter()
    .filter_map(|(label, key)| alert.field(key).map(|url| button(label, url)))
    .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": text}}),
        json!({"type": "divider"}),
    ];
    if !buttons.is_empty() {
        blocks.push(json!({"type": "actions", "elements": buttons}));
    }
    json!({"text": text, "blocks": blocks})
}

impl Sink for SlackSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn accepts(&self, alert: &Alert) -> bool {
        alert.tenant_id == self.config.tenant_id
            && self.config.alert_enable_by_tag.allows(&alert.app_tags)
    }

    fn rate_limit(&self) -> Duration {
        self.config.rate_limit
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let message = self.message(alert)?;
        http::post_json(
            &self.client,
            &self.config.webhook_url,
            &message,
            &[],
            http::DEFAULT_TIMEOUT,
        )
        .await
    }
}
