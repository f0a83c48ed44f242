//! Microsoft Teams incoming webhook (or Workflows "post to a channel when a webhook request is
//! received"), as Butler's `alert.teamsNotification.reloadAppFailure`: `messageType: basic`
//! posts an Adaptive Card with the rendered `basicMsgTemplate` as heading and a button to the
//! QMC; `formatted` posts the rendered `templateFile` as it is (a `message` with an Adaptive
//! Card attachment, or a MessageCard, whichever the template holds).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::slack::read_template;
use super::template::{render_json, render_text};
use super::{BuildError, Sink, SinkError, http};
use crate::alert::Alert;
use crate::config::{AlertEnableByTag, MessageType, SecretUrl, TeamsAlert, TenantConfig};

#[derive(Debug, Clone)]
pub struct TeamsConfig {
    pub tenant_id: String,
    pub webhook_url: SecretUrl,
    pub message_type: MessageType,
    pub basic_msg_template: String,
    /// Contents of `templateFile`, read at start-up so a missing file fails early.
    pub template: Option<String>,
    pub template_file: Option<PathBuf>,
    pub head_script_log_lines: usize,
    pub tail_script_log_lines: usize,
    pub rate_limit: Duration,
    pub alert_enable_by_tag: AlertEnableByTag,
}

impl TeamsConfig {
    pub fn from_tenant(tenant: &TenantConfig, teams: &TeamsAlert) -> Result<Self, BuildError> {
        let common = &teams.common;
        let key = format!(
            "{}.alert.teamsNotification.reloadAppFailure",
            tenant.key_path
        );
        Ok(Self {
            tenant_id: tenant.id.clone(),
            webhook_url: common.webhook_url.clone(),
            message_type: common.message_type,
            basic_msg_template: common
                .basic_msg_template
                .clone()
                .unwrap_or_else(|| super::slack::DEFAULT_BASIC_TEMPLATE.to_owned()),
            template: read_template(common.message_type, common.template_file.as_ref(), &key)?,
            template_file: common.template_file.clone(),
            head_script_log_lines: common.head_script_log_lines,
            tail_script_log_lines: common.tail_script_log_lines,
            rate_limit: common.rate_limit,
            alert_enable_by_tag: common.alert_enable_by_tag.clone(),
        })
    }
}

pub struct TeamsSink {
    name: String,
    config: TeamsConfig,
    client: reqwest::Client,
}

impl TeamsSink {
    pub fn new(config: TeamsConfig, client: reqwest::Client) -> Self {
        Self {
            name: format!("teams:{}", config.tenant_id),
            config,
            client,
        }
    }

    /// The JSON body this sink posts for an alert.
    pub fn message(&self, alert: &Alert) -> Result<Value, SinkError> {
        let c = &self.config;
        let context = alert.chat_context_for(c.head_script_log_lines, c.tail_script_log_lines);
        match (c.message_type, &c.template) {
            (MessageType::Formatted, Some(template)) => render_json(template, &context)
                .map_err(|e| SinkError::Permanent(format!("Teams template: {e}"))),
            _ => {
                let text = render_text(&c.basic_msg_template, &context)
                    .map_err(|e| SinkError::Permanent(format!("Teams basicMsgTemplate: {e}")))?;
                Ok(basic_message(&text, alert))
            }
        }
    }
}

/// Butler's basic Teams message: an Adaptive Card with the text as heading and link buttons.
fn basic_message(text: &str, alert: &Alert) -> Value {
    let actions: Vec<Value> = [("Open QMC", "qlikSenseQMC"), ("Open app", "appUrl")]
        .into_iter()
        .filter_map(|(title, key)| {
            alert.field(key).map(|url| {
                json!({"type": "Action.OpenUrl", "title": title, "url": url, "role": "button"})
            })
        })
        .collect();
    let mut body = vec![json!({
        "type": "TextBlock", "size": "large", "weight": "bolder",
        "text": text, "style": "heading", "wrap": true
    })];
    if !actions.is_empty() {
        body.push(json!({
            "type": "ActionSet", "spacing": "extraLarge", "separator": true, "actions": actions
        }));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.3",
                "body": body
            }
        }]
    })
}

impl Sink for TeamsSink {
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
