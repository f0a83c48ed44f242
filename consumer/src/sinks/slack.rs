//! Slack incoming webhook, as Butler's `alert.slackNotification.reloadAppFailure`:
//! `messageType: basic` posts a header with the rendered `basicMsgTemplate` and buttons to the
//! QMC and hub; `formatted` posts the rendered `templateFile` (Slack Block Kit JSON).
//! `channel`, `fromUser` and `iconEmoji` are added as `channel`, `username` and `icon_emoji`
//! when the message does not set them (legacy webhooks honour them, app webhooks ignore them).
//! Keys, gating and sending are shared with Teams in [`super::chat`].

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Kind;
use super::template::Markup;
use super::chat::{ChatAlert, ChatFormat, ChatKeys, ChatSink};
use crate::alert::Alert;
use crate::config::{Node, Problems};

pub(crate) const KIND: Kind = Kind::Tenant(super::chat::parse::<Slack>);

/// A tenant's Slack alert.
pub type SlackAlert = ChatAlert<Slack>;
pub type SlackSink = ChatSink<Slack>;

/// The keys only Slack's block has.
#[derive(Debug, Clone)]
pub struct Slack {
    /// `channel`.
    pub channel: Option<String>,
    /// `fromUser`.
    pub from_user: Option<String>,
    /// `iconEmoji`.
    pub icon_emoji: Option<String>,
}

fn button(text: &str, url: &str) -> Value {
    json!({
        "type": "button",
        "text": {"type": "plain_text", "emoji": true, "text": text},
        "style": "primary",
        "url": url,
    })
}

impl ChatFormat for Slack {
    const BLOCK: &'static str = "slackNotification";
    const LABEL: &'static str = "Slack";
    const SINK: &'static str = "slack";
    const MARKUP: Markup = Markup::Slack;

    /// Butler's basic Slack message: header, divider, buttons to what the alert links to.
    /// `text` is the notification fallback Slack shows where blocks are not rendered.
    fn basic_message(&self, text: &str, alert: &Alert) -> Value {
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

    fn finish(&self, message: &mut Value) {
        let Some(object) = message.as_object_mut() else {
            return;
        };
        let extras = [
            ("channel", &self.channel),
            ("username", &self.from_user),
            ("icon_emoji", &self.icon_emoji),
        ];
        for (key, value) in extras {
            if let Some(value) = value {
                object
                    .entry(key)
                    .or_insert_with(|| Value::String(value.clone()));
            }
        }
    }

    fn summary(&self, line: &mut String) {
        if let Some(channel) = &self.channel {
            let _ = write!(line, ", channel {channel}");
        }
    }
}

impl ChatKeys for Slack {
    fn parse(block: &Node<'_>, p: &mut Problems) -> Self {
        Self {
            channel: block.child("channel").opt_string(p),
            from_user: block.child("fromUser").opt_string(p),
            icon_emoji: block.child("iconEmoji").opt_string(p),
        }
    }
}
