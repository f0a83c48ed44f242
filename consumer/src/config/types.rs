//! The consumer's configuration after loading and validation.
//!
//! Every field is already checked: URLs parse and obey the loopback rule, required Butler keys are
//! present, secrets are resolved (file or environment). Code that builds sources and sinks can use
//! these values without re-validating them. Secrets are [`SecretString`] or [`SecretUrl`], so a
//! `{:?}` of any of these types never prints one.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use qlik_events::MqttVersion;
use secrecy::SecretString;
use url::Url;

/// Everything the consumer needs, read from Butler's YAML plus the optional extension file.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `Butler.qlikSenseCloud.enable`. Loading fails when it is false, so this is `true` in any
    /// config that [`crate::config::load`] returns; kept for the summary.
    pub enabled: bool,
    /// Butler's single `Butler.qlikSenseCloud.event.mqtt.tenant` (when present) followed by the
    /// extension list `Butler.qlikSenseCloud.event.mqtt.tenants`. At least one; ids are unique.
    pub tenants: Vec<TenantConfig>,
    /// `Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker` plus its extension keys.
    pub broker: BrokerConfig,
    /// `Butler.mqttConfig.qlikSenseCloud.event.mqttForward.topic`.
    pub topics: TopicConfig,
    /// `Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure`.
    pub script_log: ScriptLogConfig,
    /// `Butler.genericUrls`: passed to templates as `genericUrls`, as Butler does.
    pub generic_urls: Vec<GenericUrl>,
    /// Extension `Butler.qlikSenseCloud.consumer.stateDirectory` (default `.state`): dedupe and
    /// rate-limit state that must survive restarts.
    pub state_dir: PathBuf,
    /// Extension `Butler.qlikSenseCloud.consumer.deadLetterDirectory`
    /// (default `<stateDirectory>/dead-letter`): parked alerts that `consumer replay` re-sends.
    pub dead_letter_dir: PathBuf,
    /// Extension `Butler.qlikSenseCloud.consumer.dedupe`.
    pub dedupe: DedupeConfig,
    /// Extension `Butler.qlikSenseCloud.consumer.retry`: delivery retries before parking.
    pub retry: RetryConfig,
    /// Extension `Butler.qlikSenseCloud.consumer.enrichment`: tenant REST API behaviour.
    pub enrichment: EnrichmentConfig,
    /// Extension `Butler.qlikSenseCloud.consumer.destinations`: destinations Butler lacks.
    /// They apply to failed reloads of every configured tenant.
    pub destinations: Destinations,
    /// `Butler.emailNotification.smtp` plus its extension keys. Read (and required) only when
    /// some tenant's email alert is enabled, since Butler lets an unused block hold placeholders.
    pub smtp: Option<SmtpConfig>,
    /// Files the configuration was read from, in merge order (main file, then extensions).
    pub sources: Vec<PathBuf>,
}

impl ConsumerConfig {
    /// The tenant with this id (as sent in the event's `tenantid` / `extensions.tenantId`).
    pub fn tenant(&self, tenant_id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == tenant_id)
    }
}

/// One Qlik Cloud tenant: Butler's `tenant` block, or one entry of the `tenants` extension list.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// `id`: the tenant id Qlik puts in events (e.g. `Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ`).
    pub id: String,
    /// `tenantUrl`: base of the REST API and of `appUrl`. https, or http on a loopback host.
    pub tenant_url: Url,
    /// `authType`: only `jwt` exists.
    pub auth_type: AuthType,
    /// `auth.jwt.token`, or `QLIK_TENANT_JWT_<ID>` / `QLIK_TENANT_JWT` from the environment.
    pub jwt: SecretString,
    /// Where [`Self::jwt`] came from, for the summary.
    pub jwt_source: SecretSource,
    /// `qlikSenseUrls.qmc` → template field `qlikSenseQMC`.
    pub qmc_url: Option<String>,
    /// `qlikSenseUrls.hub` → template field `qlikSenseHub`.
    pub hub_url: Option<String>,
    /// `comment` → template field `tenantComment`.
    pub comment: Option<String>,
    /// `alert.*`.
    pub alert: TenantAlerts,
    /// The dotted key path of this tenant block, e.g. `Butler.qlikSenseCloud.event.mqtt.tenant`
    /// or `Butler.qlikSenseCloud.event.mqtt.tenants[1]`; useful in log lines.
    pub key_path: String,
}

impl TenantConfig {
    /// `tenantUrl` without a trailing slash, the way Butler prints it in templates.
    pub fn tenant_url_str(&self) -> String {
        self.tenant_url.as_str().trim_end_matches('/').to_owned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Jwt,
}

/// Where a secret was read from. Names the variable or key, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// From the config file at this key path.
    File(String),
    /// From this environment variable.
    Env(String),
    /// Not set (only possible for optional secrets such as the broker password).
    None,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "from file ({path})"),
            SecretSource::Env(var) => write!(f, "from environment (${var})"),
            SecretSource::None => f.write_str("not set"),
        }
    }
}

/// `alert` of a tenant: Butler's three reload-failure notification blocks. A block that is absent
/// or has `enable: false` is `None`: Butler lets disabled blocks hold any value, so they are not
/// validated.
#[derive(Debug, Clone, Default)]
pub struct TenantAlerts {
    /// `alert.teamsNotification.reloadAppFailure`.
    pub teams: Option<TeamsAlert>,
    /// `alert.slackNotification.reloadAppFailure`.
    pub slack: Option<SlackAlert>,
    /// `alert.emailNotification.reloadAppFailure`.
    pub email: Option<EmailAlert>,
}

/// `alertEnableByTag`: when enabled, only apps carrying `tag` get this alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertEnableByTag {
    pub enable: bool,
    pub tag: String,
}

impl AlertEnableByTag {
    /// Whether an app with these tags should get the alert.
    pub fn allows(&self, app_tags: &[String]) -> bool {
        !self.enable || app_tags.iter().any(|t| t == &self.tag)
    }
}

/// Butler's `messageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// Render `basicMsgTemplate` into a short built-in message.
    Basic,
    /// Render `templateFile` (Handlebars) as the whole message body.
    Formatted,
}

/// Fields Teams and Slack share.
#[derive(Debug, Clone)]
pub struct ChatAlertCommon {
    pub alert_enable_by_tag: AlertEnableByTag,
    /// `basicContentOnly`: Butler skips the tenant API calls (script log, reload, app info).
    pub basic_content_only: bool,
    /// `webhookURL`: the incoming-webhook URL. It is a credential, hence masked.
    pub webhook_url: SecretUrl,
    pub message_type: MessageType,
    /// `basicMsgTemplate` (Handlebars); needed for `basic`.
    pub basic_msg_template: Option<String>,
    /// `templateFile`; needed (and checked to exist) for `formatted`.
    pub template_file: Option<PathBuf>,
    /// `headScriptLogLines` (default 10).
    pub head_script_log_lines: usize,
    /// `tailScriptLogLines` (default 10).
    pub tail_script_log_lines: usize,
    /// `rateLimit` seconds between alerts for one app (default 300, as Butler).
    pub rate_limit: Duration,
}

/// `alert.teamsNotification.reloadAppFailure` when enabled.
#[derive(Debug, Clone)]
pub struct TeamsAlert {
    pub common: ChatAlertCommon,
}

/// `alert.slackNotification.reloadAppFailure` when enabled.
#[derive(Debug, Clone)]
pub struct SlackAlert {
    pub common: ChatAlertCommon,
    /// `channel`.
    pub channel: Option<String>,
    /// `fromUser`.
    pub from_user: Option<String>,
    /// `iconEmoji`.
    pub icon_emoji: Option<String>,
}

/// `alert.emailNotification.reloadAppFailure` when enabled.
#[derive(Debug, Clone)]
pub struct EmailAlert {
    /// `alertEnableByTag`: as in Butler, it decides whether `recipients` get the email; app
    /// owner alerts do not depend on it.
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
    pub body_file_directory: Option<PathBuf>,
    pub html_template_file: Option<String>,
    /// The HTML template file `bodyFileDirectory` + `htmlTemplateFile` resolve to (checked to
    /// exist); `None` when neither is set: the built-in template is used.
    pub html_template_path: Option<PathBuf>,
    /// Extension `textTemplateFile` in `bodyFileDirectory`: the plain-text part's template;
    /// `None`: the built-in one.
    pub text_template_path: Option<PathBuf>,
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

/// `Butler.emailNotification.smtp`, with nodemailer's meaning of each key (Butler hands them to
/// nodemailer as they are).
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `host`.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `secure`: `true` speaks TLS from the first byte (SMTPS, usually port 465); `false`
    /// connects in plain text and upgrades with STARTTLS (see [`Self::security`]).
    pub secure: bool,
    /// `tls.serverName`: the name expected in the server certificate (and sent as SNI) when it
    /// differs from `host`, e.g. when `host` is an IP address.
    pub server_name: Option<String>,
    /// `tls.ignoreTLS`: never use STARTTLS, even when offered (only with `secure: false`).
    pub ignore_tls: bool,
    /// `tls.requireTLS`: fail unless the server offers STARTTLS (only with `secure: false`).
    pub require_tls: bool,
    /// `tls.rejectUnauthorized` (default `true`): `false` accepts any certificate, also a
    /// self-signed or expired one or one for another name. The connection is then encrypted
    /// but not authenticated: anyone in the network path can read it, password included.
    pub reject_unauthorized: bool,
    /// Extension `tls.caFile`: PEM file with CA certificates to trust besides the system
    /// roots (a company CA, a self-signed server certificate). Safer than
    /// `rejectUnauthorized: false`.
    pub ca_file: Option<PathBuf>,
    /// `auth` when `auth.enable` is true.
    pub auth: Option<SmtpAuth>,
    /// Extension `timeoutSeconds` (default 30): per SMTP command, connecting included.
    pub timeout: Duration,
}

impl SmtpConfig {
    /// How the connection is secured, from `secure`, `tls.ignoreTLS` and `tls.requireTLS`.
    pub fn security(&self) -> SmtpSecurity {
        if self.secure {
            SmtpSecurity::ImplicitTls
        } else if self.ignore_tls {
            SmtpSecurity::Plain
        } else if self.require_tls {
            SmtpSecurity::StartTlsRequired
        } else {
            SmtpSecurity::StartTlsOpportunistic
        }
    }

    /// The name checked against the server certificate.
    pub fn tls_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `secure: true`.
    ImplicitTls,
    /// `secure: false`, `tls.requireTLS: true`.
    StartTlsRequired,
    /// `secure: false`: STARTTLS when the server offers it, plain text otherwise (nodemailer's
    /// default).
    StartTlsOpportunistic,
    /// `secure: false`, `tls.ignoreTLS: true`.
    Plain,
}

/// `Butler.emailNotification.smtp.auth` when enabled. `Debug` never shows the password.
#[derive(Debug, Clone)]
pub struct SmtpAuth {
    /// `user`.
    pub user: String,
    /// `password`, or `SMTP_PASSWORD` from the environment.
    pub password: SecretString,
    pub password_source: SecretSource,
}

/// The MQTT broker the relay publishes to and the consumer subscribes on.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// `host`.
    pub host: String,
    /// `port`.
    pub port: u16,
    /// `username`; `None` connects anonymously.
    pub username: Option<String>,
    /// `password`, or `MQTT_PASSWORD` from the environment.
    pub password: Option<SecretString>,
    pub password_source: SecretSource,
    /// Extension `tls` (default `true`, as Butler always uses TLS).
    pub tls: bool,
    /// Extension `caFile`: PEM CA bundle instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Extensions `clientCertFile` / `clientKeyFile`: mutual TLS (AWS IoT Core, Azure Event Grid).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Extension `clientId` (default `qscloud-consumer-<hostname>`). Must be stable: the broker
    /// keeps the persistent session under it.
    pub client_id: String,
    /// Extension `mqttVersion`: `3.1.1` (default) or `5`.
    pub version: MqttVersion,
    /// Extension `cleanSession` (default `false`: persistent session, nothing lost while down).
    pub clean_session: bool,
    /// Extension `sessionExpirySeconds` (MQTT 5; default 604800 = 7 days, as long as Qlik keeps
    /// its delivery log).
    pub session_expiry: Duration,
    /// Extension `sharedSubscriptionGroup` (MQTT 5 only): subscribe as `$share/<group>/<root>`.
    pub shared_group: Option<String>,
    /// Extension `keepAliveSeconds` (default 30).
    pub keep_alive: Duration,
}

impl BrokerConfig {
    /// Connection settings for `qlik_events`, which builds the rumqttc options
    /// (`mqtt_options(clean_session)` / `mqtt_options_v5(session_expiry)`).
    pub fn broker_settings(&self) -> qlik_events::BrokerSettings {
        let mut settings =
            qlik_events::BrokerSettings::new(self.host.clone(), self.port, self.client_id.clone());
        settings.tls = self.tls.then(|| qlik_events::TlsSettings {
            ca_file: self.ca_file.clone(),
            client_cert: self.client_cert_file.clone(),
            client_key: self.client_key_file.clone(),
            ..Default::default()
        });
        settings.username = self.username.clone();
        settings.password = self.password.clone();
        settings.version = self.version;
        settings.keep_alive = self.keep_alive;
        settings
    }

    /// The MQTT 5 session expiry to request: `None` (session ends with the connection) when
    /// `cleanSession` is true.
    pub fn session_expiry_v5(&self) -> Option<Duration> {
        (!self.clean_session).then_some(self.session_expiry)
    }
}

/// `Butler.mqttConfig.qlikSenseCloud.event.mqttForward.topic` plus the shared group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    /// `subscriptionRoot`, e.g. `qscloud/#`: a valid MQTT topic filter.
    pub subscription_root: String,
    /// `appReload`, e.g. `qscloud/app/reload`: app reload events arrive on this topic or below.
    pub app_reload: String,
    /// Copied from [`BrokerConfig::shared_group`].
    pub shared_group: Option<String>,
}

impl TopicConfig {
    /// The filter to subscribe to: `subscriptionRoot`, or `$share/<group>/<subscriptionRoot>`.
    pub fn subscription_filter(&self) -> String {
        match &self.shared_group {
            Some(group) => format!("$share/{group}/{}", self.subscription_root),
            None => self.subscription_root.clone(),
        }
    }

    /// Whether a message topic is Butler's app-reload topic or below it.
    pub fn is_app_reload_topic(&self, topic: &str) -> bool {
        let root = self.app_reload.trim_end_matches('/');
        topic == root
            || topic
                .strip_prefix(root)
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

/// `Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScriptLogConfig {
    /// `Some(logDirectory)` when `enable` is true.
    pub log_directory: Option<PathBuf>,
}

/// One entry of `Butler.genericUrls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GenericUrl {
    pub id: String,
    #[serde(rename = "linkText")]
    pub link_text: String,
    pub comment: String,
    pub url: String,
}

/// Extension `consumer.dedupe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeConfig {
    /// `retentionHours` (default 168): how long an event id is remembered. Qlik retries and
    /// manual resends happen within the 7 days it keeps deliveries.
    pub retention: Duration,
}

/// Extension `consumer.retry`: how a failing destination is retried before the alert is parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// `maxAttempts` (default 5), including the first try.
    pub max_attempts: u32,
    /// `initialBackoffMs` (default 1000); doubles per attempt.
    pub initial_backoff: Duration,
    /// `maxBackoffMs` (default 60000).
    pub max_backoff: Duration,
}

/// Extension `consumer.enrichment`: tenant REST API calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichmentConfig {
    /// `enable` (default true). False: alerts carry only what the event says.
    pub enable: bool,
    /// `timeoutSeconds` per HTTP request (default 10).
    pub request_timeout: Duration,
    /// `maxRetries` on 429 / 5xx / timeouts (default 3).
    pub max_retries: u32,
    /// `maxRetryAfterSeconds` (default 30): a longer `Retry-After` is capped to this.
    pub max_retry_after: Duration,
    /// `initialBackoffMs` (default 500) when the server gives no `Retry-After`.
    pub initial_backoff: Duration,
    /// `maxScriptLogBytes` (default 16 MiB): a longer script log is cut, keeping the tail.
    pub max_script_log_bytes: usize,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            enable: true,
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            max_retry_after: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(500),
            max_script_log_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Extension `consumer.destinations`.
#[derive(Debug, Clone)]
pub struct Destinations {
    /// `log.enable` (default true): one log line per alert.
    pub log: bool,
    /// `webhook`: generic outgoing webhooks (POST of the JSON alert context).
    pub webhooks: Vec<WebhookDestination>,
    /// `mqtt`: re-publish the alert to the same broker.
    pub mqtt: Option<MqttDestination>,
}

/// One generic outgoing webhook.
#[derive(Debug, Clone)]
pub struct WebhookDestination {
    /// `name` (default `webhook-<n>`): used in logs and parked-alert file names.
    pub name: String,
    /// `url`: https, or http on a loopback host. Masked in output (it may embed a token).
    pub url: SecretUrl,
    /// `headers`: extra request headers; values are secrets (often `Authorization`).
    pub headers: Vec<(String, SecretString)>,
    /// `timeoutSeconds` (default 10).
    pub timeout: Duration,
    /// `rateLimit` seconds per app (default 0: none).
    pub rate_limit: Duration,
}

/// MQTT re-publish of alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttDestination {
    /// `topic` (default `qscloud-alerts/{tenantId}/{appId}`, outside the event tree `qscloud/#` so the broker ACL can keep alerts and events apart); `{tenantId}` and `{appId}` are
    /// replaced with sanitized values.
    pub topic: String,
    /// `retain` (default false).
    pub retain: bool,
    /// `rateLimit` seconds per app (default 0: none).
    pub rate_limit: Duration,
}

/// A URL that is a credential (Slack/Teams incoming webhooks, webhook URLs with tokens).
/// `Debug` and `Display` show only scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// The full URL, for making the request. Never log it.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// `https://hooks.slack.com/***`: enough to recognise the destination.
    pub fn masked(&self) -> String {
        let host = self.0.host_str().unwrap_or("?");
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}/***", self.0.scheme()),
            None => format!("{}://{host}/***", self.0.scheme()),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}
