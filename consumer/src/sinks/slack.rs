//! Slack incoming webhook, as Butler's `alert.slackNotification.reloadAppFailure`:
//! `messageType: basic` posts a header with the rendered `basicMsgTemplate` and buttons to the
//! QMC and hub; `formatted` posts the rendered `templateFile` (Slack Block Kit JSON).
//! `channel`, `fromUser` and `iconEmoji` are added as `channel`, `username` and `icon_emoji`
//! when the message does not set them (legacy webhooks honour them, app webhooks ignore them).
//! Keys, gating and sending are shared with Teams in [`super::chat`].

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::Kind;
use super::template::{Markup, escape_cut, escape_slack, one_line};
use super::chat::{ChatAlert, ChatFormat, ChatKeys, ChatSink};
use crate::alert::Alert;
use crate::settings::{Node, Problems};

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

/// Slack's limits on one message (Block Kit reference, `chat.postMessage`), checked on a
/// rendered digest so that a part Slack would refuse is split before it is sent.
/// Blocks in one message.
pub const SLACK_MAX_BLOCKS: usize = 50;
/// Characters in a section's `text` and in each context element's text.
pub const SLACK_MAX_TEXT_CHARS: usize = 3000;
/// Characters in each of a section's `fields` (Slack allows less there than in `text`).
pub const SLACK_MAX_FIELD_CHARS: usize = 2000;
/// Characters in a header block's plain text.
pub const SLACK_MAX_HEADER_CHARS: usize = 150;
/// Characters in the top-level `text` (the notification fallback); Slack cuts longer ones.
pub const SLACK_MAX_FALLBACK_CHARS: usize = 40_000;
/// Bytes of the whole JSON body. Slack documents no hard cap for incoming webhooks, but
/// larger payloads are refused in practice (`invalid_blocks`, 400); 40 000 keeps clear of that.
pub const SLACK_MAX_MESSAGE_BYTES: usize = 40_000;

/// Whether a rendered Slack message stays within the limits above.
pub fn within_limits(message: &Value) -> bool {
    let block_fits = |block: &Value| {
        let max_text = match block["type"].as_str() {
            Some("header") => SLACK_MAX_HEADER_CHARS,
            _ => SLACK_MAX_TEXT_CHARS,
        };
        chars(&block["text"]["text"]) <= max_text
            && items(block, "fields").all(|f| chars(&f["text"]) <= SLACK_MAX_FIELD_CHARS)
            && items(block, "elements").all(|e| chars(&e["text"]) <= SLACK_MAX_TEXT_CHARS)
    };
    items(message, "blocks").count() <= SLACK_MAX_BLOCKS
        && items(message, "blocks").all(block_fits)
        && chars(&message["text"]) <= SLACK_MAX_FALLBACK_CHARS
        && serde_json::to_vec(message).is_ok_and(|body| body.len() <= SLACK_MAX_MESSAGE_BYTES)
}

/// Characters of a string value; 0 for anything else (an absent key included).
fn chars(value: &Value) -> usize {
    value.as_str().map_or(0, |s| s.chars().count())
}

/// The entries of a list under `key`; none when absent or not a list.
fn items<'a>(value: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    value.get(key).and_then(Value::as_array).into_iter().flatten()
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
    const DIGEST_TEMPLATE: &'static str =
        include_str!("../../templates/slack-digest-qscloud.handlebars");

    fn digest_fits(message: &Value) -> bool {
        within_limits(message)
    }

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

    /// A header with the title and a mrkdwn section with the text; the title is also the
    /// notification fallback. Both are escaped, so a `<!channel>` in a webhook name from Qlik
    /// shows as typed, and cut to Slack's limits, so Slack does not refuse the whole message.
    fn notice_message(&self, title: &str, text: &str) -> Value {
        let title = one_line(title);
        let header = escape_cut(&title, SLACK_MAX_HEADER_CHARS, escape_slack);
        let mut blocks = vec![json!({"type": "header", "text": {"type": "plain_text", "text": header}})];
        // Slack refuses a section with empty text (`invalid_blocks`).
        if !text.trim().is_empty() {
            let text = escape_cut(text, SLACK_MAX_TEXT_CHARS, escape_slack);
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
        }
        json!({
            "text": escape_cut(&title, SLACK_MAX_FALLBACK_CHARS, escape_slack),
            "blocks": blocks,
        })
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
