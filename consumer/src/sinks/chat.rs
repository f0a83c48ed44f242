//! What Butler's Slack and Teams alerts share: the keys of their
//! `alert.<kind>Notification.reloadAppFailure` blocks, tag gating, rate limit, rendering and the
//! POST to the incoming webhook. Each of `slack.rs` and `teams.rs` keeps only its message
//! format (a [`ChatFormat`]).
//!
//! `basicContentOnly` is honoured as in Butler: the destination sends the basic message, without
//! script log, and asks nothing of the tenant API (only the app's tags when `alertEnableByTag`
//! needs them).
//!
//! A digest ([`crate::digest`]) is rendered from `digestTemplateFile` (default the shipped
//! `<service>-digest-qscloud` template) whatever `messageType` and `basicContentOnly` say: it
//! lists what the events carried, never a script log, so neither setting has anything to change.
//!
//! A notice from the consumer itself ([`crate::alert::Notice`], the webhook watchdog) is the
//! format's [`ChatFormat::notice_message`]: the tenant's people get it whatever the templates,
//! the tag gate and the digest settings say, since it is about the tenant, not about an app.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::template::{Markup, escape_for, render_json, render_text};
use super::{
    BuildError, Context, Destination, Preview, Renders, SharedSink, Sink, SinkError, TemplateUse,
    TenantApi, digest_context, http,
};
use crate::alert::Alert;
use crate::digest::{Digest, DigestSettings};
use crate::settings::{
    AlertEnableByTag, BUTLER_RATE_LIMIT_SECS, Node, Problems, SecretUrl, block_enabled, rate_limit,
    script_log_lines,
};

/// `basicMsgTemplate` when the block has none (possible with `messageType: formatted`, whose
/// basic message is still sent under `basicContentOnly`).
pub const DEFAULT_BASIC_TEMPLATE: &str = "Qlik Cloud app reload failed: \"{{appName}}\"";

/// Butler's `messageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Render `basicMsgTemplate` into a short built-in message.
    Basic,
    /// Render `templateFile` (Handlebars) as the whole message body.
    Formatted,
}

/// One chat service's message format.
pub trait ChatFormat: std::fmt::Debug + Clone + Send + Sync + 'static {
    /// Butler's block under a tenant's `alert`, e.g. `slackNotification`.
    const BLOCK: &'static str;
    /// The service's name in messages and `check-config`, e.g. `Slack`.
    const LABEL: &'static str;
    /// The start of the sink's name, e.g. `slack` (`slack:<tenant>`).
    const SINK: &'static str;
    /// The markup the service reads text in: every value from the event or the tenant API is
    /// escaped for it, basic and formatted messages alike.
    const MARKUP: Markup;
    /// The shipped digest template, used when `digestTemplateFile` is not set.
    const DIGEST_TEMPLATE: &'static str;

    /// Whether a rendered digest message is within what the service accepts in one message.
    fn digest_fits(message: &Value) -> bool;

    /// Butler's basic message, with `text` (the rendered `basicMsgTemplate`) as heading.
    fn basic_message(&self, text: &str, alert: &Alert) -> Value;

    /// The message for a notice from the consumer itself ([`crate::alert::Notice`]): `title` and
    /// `text` as given (plain text, partly from Qlik, so untrusted); the format escapes them for
    /// its markup and keeps them within its limits. No template: a notice is not a reload, and
    /// Butler's templates have none of its fields.
    fn notice_message(&self, title: &str, text: &str) -> Value;

    /// Last touches to every message, basic, formatted, digest or notice.
    fn finish(&self, _message: &mut Value) {}

    /// Details of its own for the tenant's `alert:` line in `check-config`.
    fn summary(&self, _line: &mut String) {}
}

/// Reading the keys only this service has (crate-private, as the configuration tree is).
pub(crate) trait ChatKeys: ChatFormat {
    fn parse(block: &Node<'_>, p: &mut Problems) -> Self;
}

/// A tenant's `alert.<kind>Notification.reloadAppFailure` block when enabled.
#[derive(Debug, Clone)]
pub struct ChatAlert<F> {
    pub tenant_id: String,
    /// The block's key path, for problems found when building.
    pub key: String,
    pub alert_enable_by_tag: AlertEnableByTag,
    /// `basicContentOnly`: the basic message, no script log, no tenant API calls for it.
    pub basic_content_only: bool,
    /// `webhookURL`: the incoming-webhook URL. It is a credential, hence masked.
    pub webhook_url: SecretUrl,
    pub message_type: MessageType,
    /// `basicMsgTemplate` (Handlebars); needed for `basic`.
    pub basic_msg_template: Option<String>,
    /// `templateFile`; needed (and checked to exist) for `formatted`.
    pub template_file: Option<PathBuf>,
    /// `digestTemplateFile` (checked to exist); `None`: the shipped digest template.
    pub digest_template_file: Option<PathBuf>,
    /// `headScriptLogLines` (default 10).
    pub head_script_log_lines: usize,
    /// `tailScriptLogLines` (default 10).
    pub tail_script_log_lines: usize,
    /// `rateLimit` seconds between alerts for one app (default 300, as Butler).
    pub rate_limit: Duration,
    /// The service's own keys.
    pub format: F,
}

/// [`super::Kind::Tenant`] for a chat service.
pub(crate) fn parse<F: ChatKeys>(
    alert: &Node<'_>,
    tenant_id: &str,
    p: &mut Problems,
) -> Option<Arc<dyn Destination>> {
    let node = alert.child(F::BLOCK).child("reloadAppFailure");
    if !block_enabled(&node, p) {
        return None;
    }
    let format = F::parse(&node, p);
    let alert_enable_by_tag = AlertEnableByTag::parse(&node, p);
    let basic_content_only = node.child("basicContentOnly").bool_or(p, false);
    let webhook_url = node.child("webhookURL").url(p, true).map(SecretUrl::new);
    let message_type = match node.child("messageType").string(p).as_deref() {
        Some("basic") => Some(MessageType::Basic),
        Some("formatted") => Some(MessageType::Formatted),
        Some(other) => {
            p.add(
                format!("{}.messageType", node.path),
                format!("must be `basic` or `formatted` (got `{other}`)"),
            );
            None
        }
        None => None,
    };
    let basic_msg_template = node.child("basicMsgTemplate").opt_string(p);
    let template_file = node.child("templateFile").opt_string(p).map(PathBuf::from);
    match message_type {
        Some(MessageType::Basic) if basic_msg_template.is_none() => {
            p.add(
                format!("{}.basicMsgTemplate", node.path),
                "missing: needed when messageType is basic",
            );
        }
        Some(MessageType::Formatted) => match &template_file {
            None => p.add(
                format!("{}.templateFile", node.path),
                "missing: needed when messageType is formatted",
            ),
            Some(file) if !file.is_file() => p.add(
                format!("{}.templateFile", node.path),
                format!("file `{}` does not exist", file.display()),
            ),
            Some(_) => {}
        },
        _ => {}
    }
    let digest_template_file = node
        .child("digestTemplateFile")
        .opt_string(p)
        .map(PathBuf::from);
    if let Some(file) = &digest_template_file
        && !file.is_file()
    {
        p.add(
            format!("{}.digestTemplateFile", node.path),
            format!("file `{}` does not exist", file.display()),
        );
    }
    // Read before any `?` below, so their problems are reported too.
    let head_script_log_lines = script_log_lines(&node, "headScriptLogLines", p);
    let tail_script_log_lines = script_log_lines(&node, "tailScriptLogLines", p);
    let rate_limit = rate_limit(&node, BUTLER_RATE_LIMIT_SECS, p);
    Some(Arc::new(ChatAlert {
        tenant_id: tenant_id.to_owned(),
        key: node.path.clone(),
        alert_enable_by_tag,
        basic_content_only,
        webhook_url: webhook_url?,
        message_type: message_type?,
        basic_msg_template,
        template_file,
        digest_template_file,
        head_script_log_lines,
        tail_script_log_lines,
        rate_limit,
        format,
    }))
}

impl<F: ChatFormat> ChatAlert<F> {
    /// The `formatted` message's template, read and compiled; `None` for `basic`.
    fn read_template(&self) -> Result<Option<String>, BuildError> {
        let (MessageType::Formatted, Some(path)) = (self.message_type, &self.template_file) else {
            return Ok(None);
        };
        let refuse = |reason: String| BuildError::Template {
            key: format!("{}.templateFile", self.key),
            path: path.display().to_string(),
            reason,
        };
        let template = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
        // A broken template fails at start-up, not at the first failed reload.
        super::template::check(&template).map_err(|e| refuse(e.to_string()))?;
        Ok(Some(template))
    }

    /// The digest template: `digestTemplateFile` read and compiled, or the shipped one.
    fn read_digest_template(&self) -> Result<String, BuildError> {
        let Some(path) = &self.digest_template_file else {
            return Ok(F::DIGEST_TEMPLATE.to_owned());
        };
        let refuse = |reason: String| BuildError::Template {
            key: format!("{}.digestTemplateFile", self.key),
            path: path.display().to_string(),
            reason,
        };
        let template = std::fs::read_to_string(path).map_err(|e| refuse(e.to_string()))?;
        super::template::check(&template).map_err(|e| refuse(e.to_string()))?;
        Ok(template)
    }
}

impl<F: ChatFormat> Destination for ChatAlert<F> {
    fn for_tenant(&self, tenant_id: &str) -> Option<Arc<dyn Destination>> {
        let mut alert = self.clone();
        alert.tenant_id = tenant_id.to_owned();
        Some(Arc::new(alert))
    }

    fn sink_name(&self) -> String {
        format!("{}:{}", F::SINK, self.tenant_id)
    }

    fn summary(&self, _config: &Context<'_>) -> Option<String> {
        Some(format!(
            "{} ({}) → {}",
            F::LABEL,
            self.tenant_id,
            self.webhook_url.masked()
        ))
    }

    fn alert_summary(&self) -> Option<String> {
        let mut s = format!("{} → {}", F::LABEL, self.webhook_url.masked());
        match self.message_type {
            MessageType::Basic => s.push_str(", basic message"),
            MessageType::Formatted => {
                let file = self
                    .template_file
                    .as_ref()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default();
                let _ = write!(s, ", formatted with {file}");
            }
        }
        if let Some(file) = &self.digest_template_file {
            let _ = write!(s, ", digests formatted with {}", file.display());
        }
        let _ = write!(
            s,
            ", script log head/tail {}/{} lines, rate limit {}s per app",
            self.head_script_log_lines,
            self.tail_script_log_lines,
            self.rate_limit.as_secs()
        );
        if self.alert_enable_by_tag.enable {
            let _ = write!(s, ", only apps tagged \"{}\"", self.alert_enable_by_tag.tag);
        }
        if self.basic_content_only {
            s.push_str(", event content only (no tenant API calls)");
        }
        self.format.summary(&mut s);
        Some(s)
    }

    fn templates(&self) -> Vec<TemplateUse> {
        let mut templates = Vec::new();
        match (
            &self.template_file,
            self.message_type,
            self.basic_content_only,
        ) {
            (Some(file), MessageType::Formatted, false) => templates.push(TemplateUse::file(
                format!("{}.templateFile", self.key),
                file,
                Renders::Alert,
            )),
            _ => {
                if let Some(text) = &self.basic_msg_template {
                    templates.push(TemplateUse::inline(
                        format!("{}.basicMsgTemplate", self.key),
                        text,
                    ));
                }
            }
        }
        if let Some(file) = &self.digest_template_file {
            templates.push(TemplateUse::file(
                format!("{}.digestTemplateFile", self.key),
                file,
                Renders::Digest,
            ));
        }
        templates
    }

    fn tenant_api(&self) -> Option<TenantApi> {
        Some(
            match (self.basic_content_only, self.alert_enable_by_tag.enable) {
                (false, _) => TenantApi::Everything,
                (true, true) => TenantApi::Tags,
                (true, false) => TenantApi::Nothing,
            },
        )
    }

    fn build(
        &self,
        config: &Context<'_>,
        client: &reqwest::Client,
    ) -> Result<SharedSink, BuildError> {
        let sink = ChatSink::new(self.clone(), client.clone())?.with_digest(config.digest.active());
        Ok(Arc::new(sink))
    }
}

/// Posts a tenant's failed reloads to a Slack or Teams incoming webhook.
pub struct ChatSink<F> {
    name: String,
    alert: ChatAlert<F>,
    /// Contents of `templateFile`, read at start-up so a missing file fails early.
    template: Option<String>,
    /// Contents of `digestTemplateFile`, or the shipped digest template.
    digest_template: String,
    /// `consumer.digest` when on: chat destinations fold alert storms.
    digest: Option<DigestSettings>,
    client: reqwest::Client,
}

impl<F: ChatFormat> ChatSink<F> {
    pub fn new(alert: ChatAlert<F>, client: reqwest::Client) -> Result<Self, BuildError> {
        Ok(Self {
            name: alert.sink_name(),
            template: alert.read_template()?,
            digest_template: alert.read_digest_template()?,
            digest: None,
            alert,
            client,
        })
    }

    /// This sink with `consumer.digest`'s settings (`None`: digests off).
    pub fn with_digest(mut self, digest: Option<DigestSettings>) -> Self {
        self.digest = digest;
        self
    }

    /// The JSON body this sink posts for an alert (a digest part's digest message, a notice's
    /// notice message).
    pub fn message(&self, alert: &Alert) -> Result<Value, SinkError> {
        if let Some(notice) = &alert.notice {
            let mut message = self
                .alert
                .format
                .notice_message(&notice.title, &notice.text);
            // `channel` and the other extras route the notice where the tenant's alerts go.
            self.alert.format.finish(&mut message);
            return Ok(message);
        }
        if let Some(digest) = &alert.digest {
            return self.digest_message(digest, &alert.tenant_id);
        }
        let c = &self.alert;
        let permanent = |what: &str, e| SinkError::Permanent(format!("{} {what}: {e}", F::LABEL));
        let mut context = if c.basic_content_only {
            alert.basic_context()
        } else {
            alert.chat_context_for(c.head_script_log_lines, c.tail_script_log_lines)
        };
        escape_for(&mut context, F::MARKUP);
        let mut message = match (&self.template, c.basic_content_only) {
            (Some(template), false) => {
                render_json(template, &context, F::MARKUP).map_err(|e| permanent("template", e))?
            }
            _ => {
                let template = c
                    .basic_msg_template
                    .as_deref()
                    .unwrap_or(DEFAULT_BASIC_TEMPLATE);
                let text = render_text(template, &context)
                    .map_err(|e| permanent("basicMsgTemplate", e))?;
                c.format.basic_message(&text, alert)
            }
        };
        c.format.finish(&mut message);
        Ok(message)
    }

    /// The JSON body for a digest part, `finish` applied (Slack's `channel` goes to digests too).
    pub fn digest_message(&self, digest: &Digest, tenant_id: &str) -> Result<Value, SinkError> {
        let mut context = digest_context(digest, tenant_id);
        escape_for(&mut context, F::MARKUP);
        let mut message = render_json(&self.digest_template, &context, F::MARKUP)
            .map_err(|e| SinkError::Permanent(format!("{} digest template: {e}", F::LABEL)))?;
        self.alert.format.finish(&mut message);
        Ok(message)
    }
}

impl<F: ChatFormat> Sink for ChatSink<F> {
    fn name(&self) -> &str {
        &self.name
    }

    /// A digest lists alerts this sink already accepted one by one; it carries no tags of its
    /// own, so the tag gate would refuse it. A notice is about the tenant, not about an app, so
    /// the gate (which picks apps) has nothing to decide either.
    fn accepts(&self, alert: &Alert) -> bool {
        alert.tenant_id == self.alert.tenant_id
            && (alert.digest.is_some()
                || alert.notice.is_some()
                || self.alert.alert_enable_by_tag.allows(&alert.app_tags))
    }

    fn rate_limit(&self) -> Duration {
        self.alert.rate_limit
    }

    fn digest(&self) -> Option<DigestSettings> {
        self.digest
    }

    /// A part that does not render is too big only when it can still be cut: a single entry
    /// goes out and fails visibly (parked) instead of vanishing in the split.
    fn digest_fits(&self, digest: &Digest) -> bool {
        match self.digest_message(digest, &self.alert.tenant_id) {
            Ok(message) => F::digest_fits(&message),
            Err(_) => digest.entries.len() <= 1,
        }
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let message = self.message(alert)?;
        http::post_json(
            &self.client,
            &self.alert.webhook_url,
            &message,
            &[],
            http::DEFAULT_TIMEOUT,
        )
        .await
    }

    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        self.message(alert).map(Preview::Json)
    }
}

#[cfg(test)]
mod digest_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::slack::{Slack, SlackSink};

    fn alert() -> Alert {
        Alert {
            app_id: Some("a1".into()),
            reload_id: Some("r1".into()),
            script_log: Some("first line\nlast line".into()),
            ..Alert::sample("e1", "t1")
        }
        .with_context(serde_json::json!({
            "appName": "Sales",
            "scriptLogTail": "last line",
        }))
    }

    fn sink(basic_content_only: bool, message_type: MessageType) -> SlackSink {
        let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates/slack-failed-reload-qscloud.handlebars");
        let alert = ChatAlert {
            tenant_id: "t1".into(),
            key: "k".into(),
            alert_enable_by_tag: AlertEnableByTag::default(),
            basic_content_only,
            webhook_url: SecretUrl::new(url::Url::parse("https://hooks.example/x").unwrap()),
            message_type,
            basic_msg_template: Some("{{appName}}: {{scriptLogTail}}".into()),
            template_file: Some(template),
            digest_template_file: None,
            head_script_log_lines: 1,
            tail_script_log_lines: 1,
            rate_limit: Duration::ZERO,
            format: Slack {
                channel: Some("ops".into()),
                from_user: None,
                icon_emoji: None,
            },
        };
        ChatSink::new(alert, reqwest::Client::new()).unwrap()
    }

    #[test]
    fn basic_content_only_sends_the_basic_message_without_script_log() {
        let basic = sink(false, MessageType::Basic).message(&alert()).unwrap();
        assert_eq!(basic["text"], "Sales: last line");
        assert_eq!(basic["channel"], "ops");
        let formatted = sink(false, MessageType::Formatted)
            .message(&alert())
            .unwrap();
        assert!(
            formatted.to_string().contains("Script log: 2 rows"),
            "{formatted}"
        );
        for message_type in [MessageType::Basic, MessageType::Formatted] {
            let only = sink(true, message_type).message(&alert()).unwrap();
            assert_eq!(only["text"], "Sales: ", "{only}");
            assert_eq!(only["blocks"][0]["type"], "header");
            assert_eq!(only["channel"], "ops");
        }
    }

    #[test]
    fn basic_content_only_asks_the_tenant_api_for_what_the_gate_needs() {
        let mut gated = sink(true, MessageType::Basic).alert;
        assert_eq!(gated.tenant_api(), Some(TenantApi::Nothing));
        gated.alert_enable_by_tag.enable = true;
        assert_eq!(gated.tenant_api(), Some(TenantApi::Tags));
        gated.basic_content_only = false;
        assert_eq!(gated.tenant_api(), Some(TenantApi::Everything));
    }

    const HOSTILE_APP: &str = "Ops <!channel> <https://evil.example/login|Re-login>";
    const HOSTILE_ERROR: &str =
        "Script error <!here> *bold* & [link](https://evil)\n- item\n1. step\n<@U123>";

    fn hostile_alert() -> Alert {
        let mut alert = alert();
        let context = serde_json::json!({
            "appName": HOSTILE_APP,
            "appId": "a1",
            "appUrl": "https://t.example/sense/app/a1?x=1&y=2",
            "errorMessage": HOSTILE_ERROR,
            "missing": ["script log: <!channel>"],
            "genericUrls": [{"id": "d", "linkText": "Docs", "url": "https://d.example/?a=1&b=2"}],
        });
        alert.context = context.as_object().cloned().unwrap_or_default();
        alert.script_log = Some(format!("first line\n{HOSTILE_ERROR}").into());
        alert
    }

    fn chat_sink<F: ChatFormat>(format: F, message_type: MessageType) -> ChatSink<F> {
        let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
            "templates/{}-failed-reload-qscloud.handlebars",
            F::SINK
        ));
        let alert = ChatAlert {
            tenant_id: "t1".into(),
            key: "k".into(),
            alert_enable_by_tag: AlertEnableByTag::default(),
            basic_content_only: false,
            webhook_url: SecretUrl::new(url::Url::parse("https://hooks.example/x").unwrap()),
            message_type,
            basic_msg_template: Some("Failed: {{appName}}: {{errorMessage}}".into()),
            template_file: Some(template),
            digest_template_file: None,
            head_script_log_lines: 10,
            tail_script_log_lines: 10,
            rate_limit: Duration::ZERO,
            format,
        };
        ChatSink::new(alert, reqwest::Client::new()).unwrap()
    }

    /// Every string in a JSON document, keys excluded.
    fn strings(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::String(s) => out.push(s.clone()),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }

    #[test]
    fn slack_messages_escape_mentions_and_links_from_the_tenant() {
        let slack = Slack {
            channel: None,
            from_user: None,
            icon_emoji: None,
        };
        for message_type in [MessageType::Basic, MessageType::Formatted] {
            let message = chat_sink(slack.clone(), message_type)
                .message(&hostile_alert())
                .unwrap();
            let mut texts = Vec::new();
            strings(&message, &mut texts);
            let all = texts.join("\n");
            for active in ["<!channel>", "<!here>", "<https://evil", "<@U123>"] {
                assert!(!all.contains(active), "{active} in {all}");
            }
            assert!(
                all.contains("Ops &lt;!channel&gt; &lt;https://evil.example/login|Re-login&gt;"),
                "{all}"
            );
            assert!(all.contains("&lt;!here&gt; *bold* &amp; [link]"), "{all}");
        }
        let formatted = chat_sink(slack, MessageType::Formatted)
            .message(&hostile_alert())
            .unwrap();
        let text = formatted.to_string();
        // The template's own link markup stays; the URL from the configuration is untouched.
        assert!(
            text.contains("<https://t.example/sense/app/a1?x=1&y=2|Ops &lt;!channel&gt;"),
            "{text}"
        );
        assert!(
            text.contains("\"url\":\"https://d.example/?a=1&b=2\""),
            "{text}"
        );
        assert!(text.contains("script log: &lt;!channel&gt;"), "{text}");
    }

    #[test]
    fn teams_messages_escape_markdown_from_the_tenant() {
        use crate::sinks::teams::Teams;
        for message_type in [MessageType::Basic, MessageType::Formatted] {
            let mut message = chat_sink(Teams, message_type)
                .message(&hostile_alert())
                .unwrap();
            // The code block shows the log as it is (checked below); Teams reads no markdown there.
            if let Some(code) = message.pointer_mut("/attachments/0/content/body/3/codeSnippet") {
                *code = Value::Null;
            }
            let text = message.to_string();
            assert!(!text.contains("[link](https://evil)"), "{text}");
            assert!(!text.contains(" *bold* "), "{text}");
            assert!(
                text.contains(r"Ops \\<!channel\\> \\<https://evil.example/login\\|Re-login\\>"),
                "{text}"
            );
            assert!(text.contains(r"\\*bold\\*"), "{text}");
            assert!(text.contains(r"\\[link\\]\\(https://evil\\)"), "{text}");
        }
        let formatted = chat_sink(Teams, MessageType::Formatted)
            .message(&hostile_alert())
            .unwrap();
        let body = &formatted["attachments"][0]["content"]["body"];
        // Line-start list markers are escaped in text blocks …
        let facts = body[1]["facts"].to_string();
        assert!(facts.contains(r"\\- item\n1\\. step"), "{facts}");
        // … and the code block shows the log as it is.
        assert_eq!(
            body[3]["codeSnippet"],
            format!("first line\n{HOSTILE_ERROR}")
        );
        assert_eq!(
            formatted["attachments"][0]["content"]["actions"][0]["url"],
            "https://t.example/sense/app/a1?x=1&y=2"
        );
    }

    fn hostile_notice() -> Alert {
        Alert::for_notice(
            "t1",
            "watchdog-1",
            crate::alert::Notice {
                title: format!("Qlik disabled the webhook {HOSTILE_APP}"),
                text: format!("disabledReason: {HOSTILE_ERROR}\nRe-enabled by the consumer."),
            },
        )
    }

    #[test]
    fn slack_notice_escapes_mentions_and_keeps_channel_extras() {
        let mut sink = sink(false, MessageType::Formatted);
        // The notice passes the tag gate that refuses the tenant's untagged apps.
        sink.alert.alert_enable_by_tag = AlertEnableByTag {
            enable: true,
            tag: "alert".into(),
        };
        let notice = hostile_notice();
        assert!(sink.accepts(&notice));
        assert!(!sink.accepts(&Alert {
            tenant_id: "t2".into(),
            ..notice.clone()
        }));
        assert!(!sink.accepts(&alert()));
        let message = sink.message(&notice).unwrap();
        assert_eq!(message["channel"], "ops");
        let blocks = message["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2, "{message}");
        assert_eq!(blocks[0]["type"], "header");
        assert_eq!(blocks[0]["text"]["type"], "plain_text");
        assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
        let mut texts = Vec::new();
        strings(&message, &mut texts);
        let all = texts.join("\n");
        for active in ["<!channel>", "<!here>", "<https://evil", "<@U123>"] {
            assert!(!all.contains(active), "{active} in {all}");
        }
        assert_eq!(
            message["text"],
            "Qlik disabled the webhook Ops &lt;!channel&gt; &lt;https://evil.example/login|Re-login&gt;"
        );
        assert_eq!(blocks[0]["text"]["text"], message["text"]);
        let text = blocks[1]["text"]["text"].as_str().unwrap();
        assert!(
            text.starts_with("disabledReason: Script error &lt;!here&gt;"),
            "{text}"
        );
        assert!(
            text.ends_with("&lt;@U123&gt;\nRe-enabled by the consumer."),
            "{text}"
        );
        assert!(crate::sinks::slack::within_limits(&message));
    }

    #[test]
    fn slack_notice_header_is_cut_visibly_to_slacks_limit() {
        let notice = Alert::for_notice(
            "t1",
            "k",
            crate::alert::Notice {
                title: "<".repeat(200),
                text: "x".repeat(5000),
            },
        );
        let message = sink(false, MessageType::Basic).message(&notice).unwrap();
        let header = message["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(header.chars().count() <= crate::sinks::slack::SLACK_MAX_HEADER_CHARS);
        assert!(
            header.starts_with("&lt;&lt;") && header.ends_with("&lt;…"),
            "{header}"
        );
        assert!(crate::sinks::slack::within_limits(&message), "{message}");
        let empty = Alert::for_notice(
            "t1",
            "k",
            crate::alert::Notice {
                title: "t".into(),
                text: " \n".into(),
            },
        );
        let message = sink(false, MessageType::Basic).message(&empty).unwrap();
        assert_eq!(
            message["blocks"].as_array().map(Vec::len),
            Some(1),
            "{message}"
        );
    }

    #[test]
    fn teams_notice_escapes_markdown() {
        use crate::sinks::teams::Teams;
        let sink = chat_sink(Teams, MessageType::Formatted);
        let notice = hostile_notice();
        assert!(sink.accepts(&notice));
        let message = sink.message(&notice).unwrap();
        let content = &message["attachments"][0]["content"];
        assert_eq!(content["type"], "AdaptiveCard");
        assert_eq!(content["version"], "1.3");
        let body = content["body"].as_array().unwrap();
        assert_eq!(body.len(), 2, "{message}");
        assert_eq!(body[0]["style"], "heading");
        assert_eq!(
            body[0]["text"],
            r"Qlik disabled the webhook Ops \<!channel\> \<https://evil.example/login\|Re-login\>"
        );
        assert_eq!(body[1]["wrap"], true);
        let text = body[1]["text"].as_str().unwrap();
        assert!(!text.contains("[link](https://evil)"), "{text}");
        assert!(!text.contains(" *bold* "), "{text}");
        assert!(
            text.contains(r"\*bold\* & \[link\]\(https://evil\)"),
            "{text}"
        );
        // Each line a paragraph, list markers escaped at its start.
        assert!(text.contains("\n\n\\- item\n\n1\\. step\n\n"), "{text}");
        assert!(crate::sinks::teams::within_limits(&message));
    }
}
