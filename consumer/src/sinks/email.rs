//! Email over SMTP, as Butler's `alert.emailNotification.reloadAppFailure`, through the server
//! in `Butler.emailNotification.smtp`.
//!
//! As in Butler, every recipient gets an email of their own (one `To:`, one envelope
//! recipient): [`Sink::recipients`] names them, and the delivery layer rate-limits (per app
//! and recipient), retries and parks each copy on its own, so a rejected address neither blocks
//! nor repeats the others. Recipients are Butler's `recipients` (only for apps carrying the
//! `alertEnableByTag` tag, when that is on) plus the app owner (`appOwnerAlert`, whose address
//! the tenant's users API gave, with the include and exclude lists applied).
//!
//! The body is `multipart/alternative`: the HTML template (every value HTML-escaped) and a
//! plain-text part. The subject is rendered from `subject` and kept on one line. `priority`
//! becomes `X-Priority`, `X-MSMail-Priority` and `Importance`, as nodemailer writes them.
//!
//! A digest part ([`crate::digest`]) is rendered by [`digest`]: it goes to the recipient the
//! part carries, with its own subject and templates.
//!
//! A notice from the consumer itself ([`crate::alert::Notice`]) is rendered by [`notice`]: the
//! configured `recipients` get it, whatever `alertEnableByTag` says (it picks apps, and a
//! notice is about none); the app owner does not (there is no app).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::template::{check, one_line, render_html, render_text};
use super::{
    BuildError, Context, Destination, EmailPreview, Kind, Preview, Renders, SharedSink, Sink,
    SinkError, TemplateUse,
};
use crate::alert::Alert;
use crate::digest::{Digest, DigestSettings};
use crate::settings::{
    AlertEnableByTag, BUTLER_RATE_LIMIT_SECS, Node, Problems, SMTP, SmtpConfig,
    SmtpSecurity, block_enabled, is_placeholder, parse_mailbox, rate_limit, script_log_lines,
};
use crate::state::fnv1a;

/// The HTML body used when `bodyFileDirectory` / `htmlTemplateFile` are not set.
pub const DEFAULT_HTML_TEMPLATE: &str =
    include_str!("../../templates/email-failed-reload-qscloud.handlebars");
/// The plain-text part used when `textTemplateFile` is not set.
pub const DEFAULT_TEXT_TEMPLATE: &str =
    include_str!("../../templates/email-failed-reload-qscloud-text.handlebars");

pub(crate) const KIND: Kind = Kind::Tenant(parse);

/// A tenant's `alert.emailNotification.reloadAppFailure` when enabled.
#[derive(Debug, Clone)]
pub struct EmailAlert {
    pub tenant_id: String,
    /// The block's key path, for problems found when building.
    pub key: String,
    /// `alertEnableByTag`: gates the whole email, owner included (see [`EmailSink`]).
    pub alert_enable_by_tag: AlertEnableByTag,
    pub app_owner_alert: AppOwnerAlert,
    /// `rateLimit` seconds per app *and* recipient (default 300, as Butler).
    pub rate_limit: Duration,
    pub head_script_log_lines: usize,
    pub tail_script_log_lines: usize,
    /// `priority`: high / normal / low.
    pub priority: EmailPriority,
    /// `subject` (Handlebars).
    pub subject: String,
    /// The HTML template file `bodyFileDirectory` + `htmlTemplateFile` resolve to (checked to
    /// exist); `None` when neither is set: the built-in template is used.
    pub html_template_path: Option<PathBuf>,
    /// Extension `textTemplateFile` in `bodyFileDirectory`: the plain-text part's template;
    /// `None`: the built-in one.
    pub text_template_path: Option<PathBuf>,
    /// Extension `digestTemplateFile` (in `bodyFileDirectory` when relative): the HTML part of
    /// a digest; `None`: the built-in one.
    pub digest_template_path: Option<PathBuf>,
    /// `fromAddress`, e.g. `Qlik Sense (no-reply) <qliksense-noreply@example.com>`; checked to
    /// be a mailbox.
    pub from_address: String,
    /// `recipients`: checked to be addresses.
    pub recipients: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailPriority {
    High,
    Normal,
    Low,
}

/// `appOwnerAlert` of the email block.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppOwnerAlert {
    pub enable: bool,
    /// `includeOwner.includeAll`.
    pub include_all: bool,
    /// `includeOwner.user[].email`.
    pub include: Vec<String>,
    /// `excludeOwner.user[].email`.
    pub exclude: Vec<String>,
}

impl AppOwnerAlert {
    /// Whether the app owner with this email address gets the alert: owner alerts on, the
    /// owner included (`includeAll` or listed) and not excluded. The exclude list wins, as in
    /// Butler. Addresses compare without regard to case (mail systems treat them so, and
    /// the users API and a hand-written list may differ in case).
    pub fn allows(&self, owner_email: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|e| e.eq_ignore_ascii_case(owner_email));
        self.enable
            && !owner_email.is_empty()
            && (self.include_all || listed(&self.include))
            && !listed(&self.exclude)
    }
}

/// Email addresses in a list: plain strings (`recipients`) or Butler's `- email: x` entries.
fn emails(node: &Node<'_>, p: &mut Problems) -> Vec<String> {
    node.items(p)
        .into_iter()
        .filter_map(|item| {
            let item = if matches!(item.value, Some(serde_yaml_ng::Value::Mapping(_))) {
                item.child("email")
            } else {
                item
            };
            let email = item.string(p)?;
            if is_placeholder(&email) || email.parse::<lettre::Address>().is_err() {
                p.add(&item.path, format!("not an email address (got `{email}`)"));
                return None;
            }
            Some(email)
        })
        .collect()
}

fn parse(alert: &Node<'_>, tenant_id: &str, p: &mut Problems) -> Option<Arc<dyn Destination>> {
    let node = alert.at("emailNotification.reloadAppFailure");
    if !block_enabled(&node, p) {
        return None;
    }
    let alert_enable_by_tag = AlertEnableByTag::parse(&node, p);
    let owner = node.child("appOwnerAlert");
    let app_owner_alert = AppOwnerAlert {
        enable: owner.child("enable").bool_or(p, false),
        include_all: owner.at("includeOwner.includeAll").bool_or(p, true),
        include: emails(&owner.at("includeOwner.user"), p),
        exclude: emails(&owner.at("excludeOwner.user"), p),
    };
    let priority = match node
        .child("priority")
        .opt_string(p)
        .map(|s| s.to_ascii_lowercase())
        .as_deref()
    {
        None | Some("normal") => EmailPriority::Normal,
        Some("high") => EmailPriority::High,
        Some("low") => EmailPriority::Low,
        Some(other) => {
            p.add(
                format!("{}.priority", node.path),
                format!("must be high, normal or low (got `{other}`)"),
            );
            EmailPriority::Normal
        }
    };
    let subject = node.child("subject").string(p);
    if let Some(subject) = &subject
        && let Err(e) = check(subject)
    {
        p.add(format!("{}.subject", node.path), e.to_string());
    }
    let from_address = node.child("fromAddress").real_string(p);
    if let Some(from) = &from_address
        && let Err(e) = parse_mailbox(from)
    {
        p.add(format!("{}.fromAddress", node.path), e);
    }
    let recipients = emails(&node.child("recipients"), p);
    if recipients.is_empty() && !app_owner_alert.enable {
        p.add(
            format!("{}.recipients", node.path),
            "empty, and appOwnerAlert is off: nobody would get the email",
        );
    }
    let rate_limit = rate_limit(&node, BUTLER_RATE_LIMIT_SECS, p);
    let head_script_log_lines = script_log_lines(&node, "headScriptLogLines", p);
    let tail_script_log_lines = script_log_lines(&node, "tailScriptLogLines", p);
    let (html_template_path, text_template_path, digest_template_path) = template_paths(&node, p);
    Some(Arc::new(EmailAlert {
        tenant_id: tenant_id.to_owned(),
        key: node.path.clone(),
        alert_enable_by_tag,
        app_owner_alert,
        rate_limit,
        head_script_log_lines,
        tail_script_log_lines,
        priority,
        subject: subject?,
        html_template_path,
        text_template_path,
        digest_template_path,
        from_address: from_address?,
        recipients,
    }))
}

/// `bodyFileDirectory` with `htmlTemplateFile` and the extensions `textTemplateFile` and
/// `digestTemplateFile`.
fn template_paths(
    node: &Node<'_>,
    p: &mut Problems,
) -> (Option<PathBuf>, Option<PathBuf>, Option<PathBuf>) {
    let dir = node
        .child("bodyFileDirectory")
        .opt_string(p)
        .map(PathBuf::from);
    let html = node.child("htmlTemplateFile").opt_string(p);
    let text = node.child("textTemplateFile").opt_string(p);
    let dir_key = format!("{}.bodyFileDirectory", node.path);
    let html_path = match (&dir, &html) {
        (None, None) => None,
        (None, Some(_)) => {
            p.add(&dir_key, "missing: needed with htmlTemplateFile");
            None
        }
        (Some(_), None) => {
            p.add(
                format!("{}.htmlTemplateFile", node.path),
                "missing: needed with bodyFileDirectory",
            );
            None
        }
        (Some(dir), Some(file)) => {
            template_in(dir, file, &format!("{}.htmlTemplateFile", node.path), p)
        }
    };
    let text_path = match (&dir, &text) {
        (_, None) => None,
        (None, Some(_)) => {
            p.add(&dir_key, "missing: needed with textTemplateFile");
            None
        }
        (Some(dir), Some(file)) => {
            template_in(dir, file, &format!("{}.textTemplateFile", node.path), p)
        }
    };
    let digest_path = digest::template_path(node, dir.as_deref(), p);
    (html_path, text_path, digest_path)
}

/// Butler's email template lookup: `<bodyFileDirectory>/<name>.handlebars` (the extension is
/// added, as nodemailer-express-handlebars does), or the name as written when it already has
/// its extension. The template must exist and compile.
fn template_in(dir: &Path, name: &str, key: &str, p: &mut Problems) -> Option<PathBuf> {
    let candidates = [dir.join(format!("{name}.handlebars")), dir.join(name)];
    let Some(path) = candidates.iter().find(|c| c.is_file()) else {
        p.add(
            key,
            format!(
                "no template `{}` (nor `{}`)",
                candidates[0].display(),
                candidates[1].display()
            ),
        );
        return None;
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Err(e) = check(&text) {
                p.add(key, format!("`{}`: {e}", path.display()));
            }
        }
        Err(e) => p.add(key, format!("`{}` is unreadable: {e}", path.display())),
    }
    Some(path.clone())
}

impl Destination for EmailAlert {
    fn for_tenant(&self, tenant_id: &str) -> Option<Arc<dyn Destination>> {
        let mut alert = self.clone();
        alert.tenant_id = tenant_id.to_owned();
        Some(Arc::new(alert))
    }

    fn sink_name(&self) -> String {
        format!("email:{}", self.tenant_id)
    }

    fn templates(&self) -> Vec<TemplateUse> {
        let mut templates = vec![TemplateUse::inline(
            format!("{}.subject", self.key),
            &self.subject,
        )];
        for (key, path, renders) in [
            ("htmlTemplateFile", &self.html_template_path, Renders::Alert),
            ("textTemplateFile", &self.text_template_path, Renders::Alert),
            ("digestTemplateFile", &self.digest_template_path, Renders::Digest),
        ] {
            if let Some(path) = path {
                templates.push(TemplateUse::file(format!("{}.{key}", self.key), path, renders));
            }
        }
        templates
    }

    fn summary(&self, config: &Context<'_>) -> Option<String> {
        let smtp = config.smtp?;
        Some(format!(
            "email ({}) via {}:{}",
            self.tenant_id, smtp.host, smtp.port
        ))
    }

    fn alert_summary(&self) -> Option<String> {
        let mut line = format!(
            "email to {} recipient(s){}, priority {:?}, script log head/tail {}/{} lines, rate limit {}s per app and recipient",
            self.recipients.len(),
            if self.app_owner_alert.enable {
                " and the app owner"
            } else {
                ""
            },
            self.priority,
            self.head_script_log_lines,
            self.tail_script_log_lines,
            self.rate_limit.as_secs()
        );
        match &self.html_template_path {
            Some(path) => {
                let _ = write!(line, ", template {}", path.display());
            }
            None => line.push_str(", built-in template"),
        }
        if let Some(path) = &self.digest_template_path {
            let _ = write!(line, ", digests formatted with {}", path.display());
        }
        if self.alert_enable_by_tag.enable {
            let _ = write!(
                line,
                ", recipients only for apps tagged \"{}\"",
                self.alert_enable_by_tag.tag
            );
        }
        Some(line)
    }

    fn build(
        &self,
        config: &Context<'_>,
        _: &reqwest::Client,
    ) -> Result<SharedSink, BuildError> {
        let settings = EmailConfig::new(self, config.smtp)?;
        Ok(Arc::new(
            EmailSink::new(settings)?.with_digest(config.digest.active()),
        ))
    }
}

/// A tenant's email alert, ready to send: templates read, sender parsed, with the SMTP server
/// it goes through.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub alert: EmailAlert,
    pub from: Mailbox,
    /// The HTML template's text, read at start-up so a missing file fails early.
    pub html_template: String,
    pub text_template: String,
    /// The digest's HTML template (`digestTemplateFile` or the built-in one).
    pub digest_template: String,
    pub smtp: SmtpConfig,
}

impl EmailConfig {
    pub fn new(alert: &EmailAlert, smtp: Option<&SmtpConfig>) -> Result<Self, BuildError> {
        let key = &alert.key;
        let refuse = |key: String, reason: String| BuildError::Email { key, reason };
        // Loading the configuration reads SMTP whenever an email alert is on; without it here,
        // the configuration was built by hand.
        let smtp = smtp
            .cloned()
            .ok_or_else(|| refuse(SMTP.to_owned(), "missing".to_owned()))?;
        let from = parse_mailbox(&alert.from_address)
            .map_err(|reason| refuse(format!("{key}.fromAddress"), reason))?;
        let template = |path: Option<&PathBuf>, default: &str, name: &str| {
            let text = match path {
                Some(path) => std::fs::read_to_string(path).map_err(|e| {
                    refuse(
                        format!("{key}.{name}"),
                        format!("template file {}: {e}", path.display()),
                    )
                })?,
                None => default.to_owned(),
            };
            // A broken template fails at start-up, not at the first failed reload.
            check(&text).map_err(|e| refuse(format!("{key}.{name}"), e.to_string()))?;
            Ok::<_, BuildError>(text)
        };
        let html_template = template(
            alert.html_template_path.as_ref(),
            DEFAULT_HTML_TEMPLATE,
            "htmlTemplateFile",
        )?;
        let text_template = template(
            alert.text_template_path.as_ref(),
            DEFAULT_TEXT_TEMPLATE,
            "textTemplateFile",
        )?;
        let digest_template = template(
            alert.digest_template_path.as_ref(),
            digest::DEFAULT_HTML_TEMPLATE,
            "digestTemplateFile",
        )?;
        check(&alert.subject).map_err(|e| refuse(format!("{key}.subject"), e.to_string()))?;
        Ok(Self {
            alert: alert.clone(),
            from,
            html_template,
            text_template,
            digest_template,
            smtp,
        })
    }
}

pub struct EmailSink {
    name: String,
    config: EmailConfig,
    /// `consumer.digest` when on: email destinations fold alert storms.
    digest: Option<DigestSettings>,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

/// The SMTP transport with nodemailer's meaning of Butler's keys: `secure` = TLS from the
/// start; otherwise STARTTLS when offered, required with `requireTLS`, never with `ignoreTLS`.
/// One connection per email (no pool): alerts are rare and a pooled connection would only go
/// stale between them.
fn transport(smtp: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>, BuildError> {
    let refuse = |key: &str, reason: String| BuildError::Email {
        key: format!("{SMTP}.{key}"),
        reason,
    };
    let parameters = || {
        let mut builder = TlsParameters::builder(smtp.tls_name().to_owned());
        if let Some(ca_file) = &smtp.ca_file {
            let pem = std::fs::read(ca_file)
                .map_err(|e| refuse("tls.caFile", format!("{}: {e}", ca_file.display())))?;
            let certificate = Certificate::from_pem(&pem)
                .map_err(|e| refuse("tls.caFile", format!("{}: {e}", ca_file.display())))?;
            builder = builder.add_root_certificate(certificate);
        }
        if !smtp.reject_unauthorized {
            // What nodemailer's `rejectUnauthorized: false` does: no check of the chain nor of
            // the name. Documented as a risk in docs/configuration.md.
            builder = builder
                .dangerous_accept_invalid_certs(true)
                .dangerous_accept_invalid_hostnames(true);
        }
        builder
            .build_rustls()
            .map_err(|e| refuse("tls", e.to_string()))
    };
    let tls = match smtp.security() {
        SmtpSecurity::ImplicitTls => Tls::Wrapper(parameters()?),
        SmtpSecurity::StartTlsRequired => Tls::Required(parameters()?),
        SmtpSecurity::StartTlsOpportunistic => Tls::Opportunistic(parameters()?),
        SmtpSecurity::Plain => Tls::None,
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.host.as_str())
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(smtp.timeout));
    if let Some(auth) = &smtp.auth {
        builder = builder.credentials(Credentials::new(
            auth.user.clone(),
            auth.password.expose_secret().to_owned(),
        ));
    }
    Ok(builder.build())
}

/// Header types for what lettre has no type for; the value goes through lettre's encoder, so
/// it cannot break the header block either.
macro_rules! text_header {
    ($type:ident, $name:literal) => {
        #[derive(Clone)]
        struct $type(String);

        impl Header for $type {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok(Self(s.to_owned()))
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), self.0.clone())
            }
        }
    };
}

text_header!(XPriority, "X-Priority");
text_header!(XMsMailPriority, "X-MSMail-Priority");
text_header!(Importance, "Importance");
text_header!(AutoSubmitted, "Auto-Submitted");

/// `(X-Priority, Importance)` as nodemailer writes them for `priority`.
pub fn priority_headers(priority: EmailPriority) -> (&'static str, &'static str) {
    match priority {
        EmailPriority::High => ("1 (Highest)", "High"),
        EmailPriority::Normal => ("3 (Normal)", "Normal"),
        EmailPriority::Low => ("5 (Lowest)", "Low"),
    }
}

/// `<eventId.hash@sender-domain>`: stable per event and recipient, so the duplicate that
/// at-least-once delivery can produce (a retry after the server took the message but the reply
/// got lost, a replay) carries the same id and mail systems can drop it.
fn message_id(alert: &Alert, recipient: &str, from: &Mailbox) -> String {
    let event: String = alert
        .event_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .take(100)
        .collect();
    let hash = fnv1a(&format!(
        "{}\n{}\n{}",
        alert.tenant_id,
        alert.event_id,
        recipient.to_ascii_lowercase()
    ));
    format!("<{event}.{hash:016x}@{}>", from.email.domain())
}

/// An email's rendered subject and parts.
#[derive(Clone)]
struct Rendered {
    subject: String,
    html: String,
    text: String,
}

/// `Message-ID` and the priority headers of one recipient's email.
struct ExtraHeaders {
    message_id: String,
    x_priority: &'static str,
    importance: &'static str,
}

const AUTO_SUBMITTED: &str = "auto-generated";

fn permanent(what: &str) -> impl Fn(super::template::TemplateError) -> SinkError + '_ {
    move |e| SinkError::Permanent(format!("email {what}: {e}"))
}

impl EmailSink {
    pub fn new(config: EmailConfig) -> Result<Self, BuildError> {
        Ok(Self {
            name: config.alert.sink_name(),
            transport: transport(&config.smtp)?,
            config,
            digest: None,
        })
    }

    /// This sink with `consumer.digest`'s settings (`None`: digests off).
    pub fn with_digest(mut self, digest: Option<DigestSettings>) -> Self {
        self.digest = digest;
        self
    }

    pub fn config(&self) -> &EmailConfig {
        &self.config
    }

    /// The email this sink sends for an alert (or a digest part) to one recipient.
    pub fn message(&self, alert: &Alert, recipient: &str) -> Result<Message, SinkError> {
        let rendered = self.render(alert)?;
        self.build_message(alert, recipient, rendered)
    }

    /// Subject, HTML and text of the email for an alert, a digest part or a notice.
    fn render(&self, alert: &Alert) -> Result<Rendered, SinkError> {
        let c = &self.config;
        let (subject, html, text) = match (&alert.notice, &alert.digest) {
            (Some(n), _) => notice::render(n),
            (None, Some(d)) => digest::render(&c.digest_template, d, &alert.tenant_id)?,
            (None, None) => {
                let context = alert
                    .context_for(c.alert.head_script_log_lines, c.alert.tail_script_log_lines);
                let subject = render_text(&c.alert.subject, &context)
                    .map_err(permanent("subject"))?;
                let html =
                    render_html(&c.html_template, &context).map_err(permanent("HTML template"))?;
                let text =
                    render_text(&c.text_template, &context).map_err(permanent("text template"))?;
                (one_line(&subject), html, text)
            }
        };
        Ok(Rendered {
            subject,
            html,
            text,
        })
    }

    /// The headers besides `From`, `To` and `Subject`, in the order they are set.
    fn extra_headers(&self, alert: &Alert, recipient: &str) -> ExtraHeaders {
        let (x_priority, importance) = priority_headers(self.config.alert.priority);
        ExtraHeaders {
            message_id: message_id(alert, recipient, &self.config.from),
            x_priority,
            importance,
        }
    }

    fn build_message(
        &self,
        alert: &Alert,
        recipient: &str,
        rendered: Rendered,
    ) -> Result<Message, SinkError> {
        let c = &self.config;
        let to = recipient.parse::<Address>().map_err(|_| {
            SinkError::Permanent(format!("email: not an email address: {recipient:?}"))
        })?;
        let extra = self.extra_headers(alert, recipient);
        Message::builder()
            .from(c.from.clone())
            .to(Mailbox::new(None, to))
            .subject(rendered.subject)
            .message_id(Some(extra.message_id))
            .header(XPriority(extra.x_priority.to_owned()))
            .header(XMsMailPriority(extra.importance.to_owned()))
            .header(Importance(extra.importance.to_owned()))
            // RFC 3834: automatic mail, so out-of-office replies are not sent back to it.
            .header(AutoSubmitted(AUTO_SUBMITTED.to_owned()))
            .multipart(MultiPart::alternative_plain_html(rendered.text, rendered.html))
            .map_err(|e| SinkError::Permanent(format!("email: cannot build the message: {e}")))
    }

    /// The email [`Self::message`] builds, as headers and parts (the message is built too, so
    /// what would fail to build fails here).
    fn preview_email(&self, alert: &Alert, recipient: &str) -> Result<EmailPreview, SinkError> {
        let rendered = self.render(alert)?;
        self.build_message(alert, recipient, rendered.clone())?;
        let extra = self.extra_headers(alert, recipient);
        let headers = [
            ("From", self.config.from.to_string()),
            ("To", recipient.to_owned()),
            ("Subject", rendered.subject),
            ("Message-ID", extra.message_id),
            ("X-Priority", extra.x_priority.to_owned()),
            ("X-MSMail-Priority", extra.importance.to_owned()),
            ("Importance", extra.importance.to_owned()),
            ("Auto-Submitted", AUTO_SUBMITTED.to_owned()),
        ];
        Ok(EmailPreview {
            headers: headers
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
            text: rendered.text,
            html: rendered.html,
        })
    }

    fn describe_server(&self) -> String {
        format!("SMTP {}:{}", self.config.smtp.host, self.config.smtp.port)
    }
}

/// 5xx replies (a rejected recipient or sender, failed authentication), TLS failures and
/// client-side refusals (STARTTLS required but not offered) will not go away by retrying within
/// minutes: park at once. Connection problems, timeouts and 4xx replies (greylisting, a full
/// queue) are retried.
fn classify(error: &lettre::transport::smtp::Error, context: String) -> SinkError {
    let message = format!("{context}: {error}");
    if error.is_permanent() || error.is_tls() || error.is_client() {
        SinkError::Permanent(message)
    } else {
        SinkError::Transient(message)
    }
}

/// Each address once, the first spelling kept: mail systems compare addresses without regard
/// to case, and one person should not get two copies.
fn unique(mut list: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    list.retain(|address| seen.insert(address.to_ascii_lowercase()));
    list
}

impl Sink for EmailSink {
    fn name(&self) -> &str {
        &self.name
    }

    /// `alertEnableByTag` gates the whole email, owner included, as it gates Slack and Teams:
    /// an untagged app is not to alert anyone. (Butler 16 only gates the recipients list.)
    /// A digest lists alerts this sink already accepted one by one; it carries no tags of its
    /// own, so the tag gate would refuse it. A notice is about the tenant, not about an app, so
    /// the gate has nothing to decide.
    fn accepts(&self, alert: &Alert) -> bool {
        let c = &self.config.alert;
        alert.tenant_id == c.tenant_id
            && (alert.digest.is_some()
                || alert.notice.is_some()
                || c.alert_enable_by_tag.allows(&alert.app_tags))
    }

    fn digest(&self) -> Option<DigestSettings> {
        self.digest
    }

    fn digest_fits(&self, digest: &Digest) -> bool {
        digest::fits(&self.config.digest_template, digest, &self.config.alert.tenant_id)
    }

    fn rate_limit(&self) -> Duration {
        self.config.alert.rate_limit
    }

    /// `recipients`, plus the app owner when `appOwnerAlert` lets them have it. Each address once.
    /// A digest part is already addressed (delivery folds each recipient's alerts apart), and
    /// has no owner of its own to look up. A notice has no app, hence no owner: `recipients`
    /// only (or the one it is already addressed to).
    fn recipients(&self, alert: &Alert) -> Option<Vec<String>> {
        let c = &self.config.alert;
        if alert.digest.is_some() || alert.notice.is_some() {
            return Some(match &alert.recipient {
                Some(recipient) => vec![recipient.clone()],
                None => unique(c.recipients.clone()),
            });
        }
        let mut list: Vec<String> = c.recipients.clone();
        if c.app_owner_alert.enable {
            match alert.field("appOwnerEmail") {
                Some(owner) if owner.parse::<Address>().is_err() => tracing::warn!(
                    sink = %self.name,
                    "{}: the app owner's email address from the tenant is not valid ({owner:?}); owner not alerted",
                    alert.describe()
                ),
                Some(owner) if c.app_owner_alert.allows(owner) => list.push(owner.to_owned()),
                Some(_) => {}
                None => tracing::info!(
                    sink = %self.name,
                    "{}: the app owner's email address is not known; owner not alerted",
                    alert.describe()
                ),
            }
        }
        Some(unique(list))
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let recipient = recipient_of(alert)?;
        let message = self.message(alert, recipient)?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| classify(&e, format!("{}, to {recipient}", self.describe_server())))
    }

    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        let recipient = recipient_of(alert)?;
        Ok(Preview::Email(Box::new(self.preview_email(alert, recipient)?)))
    }
}

/// The recipient delivery set on this copy of the alert.
fn recipient_of(alert: &Alert) -> Result<&str, SinkError> {
    alert
        .recipient
        .as_deref()
        .ok_or_else(|| SinkError::Permanent("email alert without a recipient".to_owned()))
}

mod digest;
mod notice;
pub use digest::{
    DEFAULT_HTML_TEMPLATE as DEFAULT_DIGEST_HTML_TEMPLATE,
    DEFAULT_TEXT_TEMPLATE as DEFAULT_DIGEST_TEXT_TEMPLATE, MAX_ENTRIES as MAX_DIGEST_ENTRIES,
};

#[cfg(test)]
mod tests;
