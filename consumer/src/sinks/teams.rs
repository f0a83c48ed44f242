//! Microsoft Teams incoming webhook (or Workflows "post to a channel when a webhook request is
//! received"), as Butler's `alert.teamsNotification.reloadAppFailure`: `messageType: basic`
//! posts an Adaptive Card with the rendered `basicMsgTemplate` as heading and a button to the
//! QMC; `formatted` posts the rendered `templateFile` as it is (a `message` with an Adaptive
//! Card attachment, or a MessageCard, whichever the template holds). Keys, gating and sending
//! are shared with Slack in [`super::chat`].

use serde_json::{Value, json};

use super::Kind;
use super::template::{Markup, escape_cut, escape_teams, one_line};
use super::chat::{ChatAlert, ChatFormat, ChatKeys, ChatSink};
use crate::alert::Alert;
use crate::settings::{Node, Problems};

pub(crate) const KIND: Kind = Kind::Tenant(super::chat::parse::<Teams>);

/// A tenant's Teams alert.
pub type TeamsAlert = ChatAlert<Teams>;
pub type TeamsSink = ChatSink<Teams>;

/// Bytes of one message body. Teams refuses a message over about 28 KB (its documented
/// limit for bot and webhook messages, markup included), so a digest part is kept below.
pub const TEAMS_MAX_MESSAGE_BYTES: usize = 28_000;

/// Whether a rendered Teams message is small enough to be accepted.
pub fn within_limits(message: &Value) -> bool {
    serde_json::to_vec(message).is_ok_and(|body| body.len() <= TEAMS_MAX_MESSAGE_BYTES)
}

/// Characters of a notice's heading and text kept (plain, before escaping). Escaping at most
/// doubles them, which keeps a notice far below [`TEAMS_MAX_MESSAGE_BYTES`] even in 4-byte
/// characters; a longer text (a `disabledReason` from Qlik) is cut, visibly.
pub const TEAMS_NOTICE_MAX_TITLE_CHARS: usize = 300;
pub const TEAMS_NOTICE_MAX_TEXT_CHARS: usize = 2_500;

/// Teams' block has no keys of its own.
#[derive(Debug, Clone)]
pub struct Teams;

/// A Teams message holding one Adaptive Card with `body`.
fn card(body: Vec<Value>) -> Value {
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

fn heading_block(text: &str) -> Value {
    json!({
        "type": "TextBlock", "size": "large", "weight": "bolder",
        "text": text, "style": "heading", "wrap": true
    })
}

impl ChatFormat for Teams {
    const BLOCK: &'static str = "teamsNotification";
    const LABEL: &'static str = "Teams";
    const SINK: &'static str = "teams";
    const MARKUP: Markup = Markup::Teams;
    const DIGEST_TEMPLATE: &'static str =
        include_str!("../../templates/teams-digest-qscloud.handlebars");

    fn digest_fits(message: &Value) -> bool {
        within_limits(message)
    }

    /// An Adaptive Card 1.3 like the basic message: the title as heading, the text below it.
    /// Teams reads a single line break in a TextBlock as a space (markdown), so lines become
    /// paragraphs; their indentation goes, since four spaces would start a code block.
    fn notice_message(&self, title: &str, text: &str) -> Value {
        let heading = escape_cut(&one_line(title), TEAMS_NOTICE_MAX_TITLE_CHARS, escape_teams);
        let text = escape_cut(text, TEAMS_NOTICE_MAX_TEXT_CHARS, escape_teams)
            .lines()
            .map(str::trim_start)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n");
        card(vec![
            heading_block(&heading),
            json!({"type": "TextBlock", "text": text, "wrap": true}),
        ])
    }

    /// Butler's basic Teams message: an Adaptive Card with the text as heading and link buttons.
    fn basic_message(&self, text: &str, alert: &Alert) -> Value {
        let actions: Vec<Value> = [("Open QMC", "qlikSenseQMC"), ("Open app", "appUrl")]
            .into_iter()
            .filter_map(|(title, key)| {
                alert.field(key).map(|url| {
                    json!({"type": "Action.OpenUrl", "title": title, "url": url, "role": "button"})
                })
            })
            .collect();
        let mut body = vec![heading_block(text)];
        if !actions.is_empty() {
            body.push(json!({
                "type": "ActionSet", "spacing": "extraLarge", "separator": true, "actions": actions
            }));
        }
        card(body)
    }
}

impl ChatKeys for Teams {
    fn parse(_block: &Node<'_>, _p: &mut Problems) -> Self {
        Self
    }
}
