//! Butler's `Butler.mqttConfig.qlikSenseCloud.event.mqttForward`: the broker the relay
//! publishes to and the consumer subscribes on (plus the consumer's extension keys), and the
//! topics.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use qlik_events::MqttVersion;
use secrecy::SecretString;

use super::alert::WEEK_SECS;
use super::keys::{Custom, Flag, KeyDoc, Kind, SECONDS, Span};
use super::node::{Node, Problems, is_placeholder};
use super::secret::{Absent, Env, SecretSource, resolve_secret};
use super::smtp::is_loopback_host;

/// Key path of Butler's MQTT forward block (broker and topics).
pub const FORWARD: &str = "Butler.mqttConfig.qlikSenseCloud.event.mqttForward";
/// Broker password; wins over `broker.password` in the file.
pub const MQTT_PASSWORD_ENV: &str = "MQTT_PASSWORD";

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
    /// Extension `allowPlaintext` (default `false`): `tls: false` with credentials to a host
    /// that is not loopback is refused unless this is true.
    pub allow_plaintext: bool,
    /// Extension `caFile`: PEM CA bundle instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Extensions `clientCertFile` / `clientKeyFile`: mutual TLS (AWS IoT Core, Azure Event Grid).
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
    /// Extension `clientId` (default `qscloud-consumer-<hostname>`). Must be stable: the broker
    /// keeps the persistent session under it.
    pub client_id: String,
    /// `clientId` is not set: [`Self::client_id`] is derived from the host name.
    pub client_id_from_hostname: bool,
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

    /// Whether the user name and password cross the network unencrypted (allowed only with
    /// `allowPlaintext: true`).
    pub fn sends_credentials_in_clear(&self) -> bool {
        !self.tls
            && (self.username.is_some() || self.password.is_some())
            && !is_loopback_host(&self.host)
    }

    /// The broker's lines in the `check-config` summary.
    pub(crate) fn summary(&self, s: &mut String) {
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let _ = writeln!(s, "Broker: {}", self.broker_settings().display_url());
        let version = match self.version {
            MqttVersion::V311 => "MQTT 3.1.1".to_owned(),
            MqttVersion::V5 => "MQTT 5".to_owned(),
        };
        let session = if self.clean_session {
            "clean session (events published while stopped are lost)".to_owned()
        } else if self.version == MqttVersion::V5 {
            format!("persistent session, expiry {}", secs(self.session_expiry))
        } else {
            "persistent session (clean session off)".to_owned()
        };
        let _ = writeln!(
            s,
            "  {version}, client id {}, {session}, keep-alive {}",
            self.client_id,
            secs(self.keep_alive)
        );
        let tls = if self.tls {
            match &self.ca_file {
                Some(ca) => format!("TLS, CA file {}", ca.display()),
                None => "TLS, system CA roots".to_owned(),
            }
        } else {
            "plain TCP (no TLS)".to_owned()
        };
        let tls = if self.sends_credentials_in_clear() {
            format!("{tls}; allowPlaintext: the password crosses the network unencrypted")
        } else {
            tls
        };
        let _ = writeln!(s, "  {tls}");
        if let Some(cert) = &self.client_cert_file {
            let _ = writeln!(s, "  client certificate {}", cert.display());
        }
        match &self.password {
            Some(_) => {
                let _ = writeln!(s, "  password: *** {}", self.password_source);
            }
            None => {
                let _ = writeln!(s, "  password: not set");
            }
        }
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

/// `clientId` when none is configured: stable per host, so a restarted consumer finds its
/// persistent session again.
fn default_client_id(env: Env<'_>) -> String {
    let host = env("HOSTNAME")
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| {
            h.trim()
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect::<String>()
        })
        .filter(|h| !h.is_empty());
    match host {
        Some(host) => format!("qscloud-consumer-{host}"),
        None => "qscloud-consumer".to_owned(),
    }
}

pub(crate) fn parse_forward(
    f: &Node<'_>,
    env: Env<'_>,
    p: &mut Problems,
) -> (Option<BrokerConfig>, Option<TopicConfig>) {
    if !f.expect_map(p, true) {
        return (None, None);
    }
    if f.child("enable").bool_required(p) == Some(false) {
        p.add(
            format!("{FORWARD}.enable"),
            "is false: the consumer reads its events from this broker; set it to true \
             (in the extension file, if Butler itself should keep it off)",
        );
    }
    let b = f.child("broker");
    let broker = if b.expect_map(p, true) {
        parse_broker(&b, env, p)
    } else {
        None
    };
    let t = f.child("topic");
    let topics = if t.expect_map(p, true) {
        parse_topics(&t, broker.as_ref().and_then(|b| b.shared_group.clone()), p)
    } else {
        None
    };
    (broker, topics)
}

// The consumer's own keys beside Butler's in `mqttForward.broker`, each declared once: the
// parser below reads them by these names, and `BrokerConfig::extension_keys` documents them.
const TLS: Flag = Flag {
    key: "tls",
    default: true,
};
const ALLOW_PLAINTEXT: Flag = Flag {
    key: "allowPlaintext",
    default: false,
};
const CA_FILE: Custom = Custom {
    key: "caFile",
    default: "system roots",
};
const CLIENT_CERT_FILE: Custom = Custom {
    key: "clientCertFile",
    default: "none",
};
const CLIENT_KEY_FILE: Custom = Custom {
    key: "clientKeyFile",
    default: "none",
};
const CLIENT_ID: Custom = Custom {
    key: "clientId",
    default: "qscloud-consumer-<hostname>",
};
const MQTT_VERSION: Custom = Custom {
    key: "mqttVersion",
    default: "3.1.1",
};
const CLEAN_SESSION: Flag = Flag {
    key: "cleanSession",
    default: false,
};
const SESSION_EXPIRY: Span = Span {
    key: "sessionExpirySeconds",
    default: WEEK_SECS,
    min: 1,
    max: u32::MAX as u64,
    unit: SECONDS,
};
const SHARED_GROUP: Custom = Custom {
    key: "sharedSubscriptionGroup",
    default: "none",
};
const KEEP_ALIVE: Span = Span {
    key: "keepAliveSeconds",
    default: 30,
    min: 5,
    max: 3600,
    unit: SECONDS,
};

impl BrokerConfig {
    /// The consumer's own keys in the broker block, with their defaults.
    pub fn extension_keys() -> Vec<KeyDoc> {
        let mut keys: Vec<KeyDoc> = [&CA_FILE, &CLIENT_CERT_FILE, &CLIENT_KEY_FILE, &CLIENT_ID]
            .iter()
            .map(|k| k.doc(""))
            .collect();
        keys.extend(TLS.docs("", ""));
        keys.extend(ALLOW_PLAINTEXT.docs("", ""));
        keys.push(MQTT_VERSION.doc(""));
        keys.extend(CLEAN_SESSION.docs("", ""));
        keys.extend(SESSION_EXPIRY.docs("", ""));
        keys.push(SHARED_GROUP.doc(""));
        keys.extend(KEEP_ALIVE.docs("", ""));
        keys
    }
}

fn parse_broker(b: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Option<BrokerConfig> {
    let host = b.child("host").real_string(p);
    let port = b
        .child("port")
        .u64_required(p, 1, 65535)
        .and_then(|n| u16::try_from(n).ok());
    let username = match b.child("username").opt_string(p) {
        Some(u) if is_placeholder(&u) => {
            p.add(
                format!("{}.username", b.path),
                "still holds a template placeholder (<...>): set it, or remove it to connect anonymously",
            );
            None
        }
        other => other,
    };
    // Anonymous brokers need no password, so a placeholder left from Butler's template is only
    // a mistake when a user name is set.
    let absent = if username.is_some() {
        Absent::PlaceholderRefused
    } else {
        Absent::Allowed
    };
    let (password, password_source) =
        match resolve_secret(&b.child("password"), env, &[MQTT_PASSWORD_ENV], absent, p) {
            Some((password, source)) => (Some(password), source),
            None => (None, SecretSource::None),
        };
    if password.is_some() && username.is_none() && !b.child("username").is_present() {
        p.add(
            format!("{}.username", b.path),
            "missing: a password is set, and MQTT sends a password only with a username",
        );
    }
    let tls = TLS.read(&b.child(TLS.key), p);
    let allow_plaintext = ALLOW_PLAINTEXT.read(&b.child(ALLOW_PLAINTEXT.key), p);
    let ca_file = CA_FILE.at(b).existing_file(p);
    let client_cert_file = CLIENT_CERT_FILE.at(b).existing_file(p);
    let client_key_file = CLIENT_KEY_FILE.at(b).existing_file(p);
    if client_cert_file.is_some() != client_key_file.is_some() {
        let missing = if client_cert_file.is_some() {
            "clientKeyFile"
        } else {
            "clientCertFile"
        };
        p.add(
            format!("{}.{missing}", b.path),
            "missing: a client certificate needs its key, and a key its certificate",
        );
    }
    if !tls && (ca_file.is_some() || client_cert_file.is_some()) {
        p.add(
            format!("{}.tls", b.path),
            "is false, but caFile/clientCertFile are set: they only apply to TLS",
        );
    }
    let configured_client_id = CLIENT_ID.at(b).opt_string(p);
    // An empty value counts as unset: the id is the host-derived default either way.
    let client_id_from_hostname = configured_client_id.is_none();
    let client_id = match configured_client_id {
        Some(id) if id.contains(['/', '+', '#']) => {
            p.add(
                format!("{}.clientId", b.path),
                "must not contain `/`, `+` or `#`",
            );
            None
        }
        Some(id) => Some(id),
        None => Some(default_client_id(env)),
    };
    let version = match MQTT_VERSION.at(b).opt_string(p) {
        None => Some(MqttVersion::V311),
        Some(v) => match v.parse::<MqttVersion>() {
            Ok(v) => Some(v),
            Err(_) => {
                p.add(
                    format!("{}.mqttVersion", b.path),
                    format!("must be 3.1.1 or 5 (got `{v}`)"),
                );
                None
            }
        },
    };
    let clean_session = CLEAN_SESSION.read(&b.child(CLEAN_SESSION.key), p);
    let session_expiry = SESSION_EXPIRY.read(&b.child(SESSION_EXPIRY.key), p);
    let shared_group = match SHARED_GROUP.at(b).opt_string(p) {
        Some(g) if g.contains(['/', '+', '#', '\0']) => {
            p.add(
                format!("{}.sharedSubscriptionGroup", b.path),
                "must not contain `/`, `+`, `#`",
            );
            None
        }
        Some(g) if version != Some(MqttVersion::V5) => {
            p.add(
                format!("{}.sharedSubscriptionGroup", b.path),
                "needs mqttVersion 5 (shared subscriptions are an MQTT 5 feature)",
            );
            Some(g)
        }
        other => other,
    };
    let keep_alive = KEEP_ALIVE.read(&b.child(KEEP_ALIVE.key), p);
    let broker = BrokerConfig {
        host: host?,
        port: port?,
        username,
        password,
        password_source,
        tls,
        allow_plaintext,
        ca_file,
        client_cert_file,
        client_key_file,
        client_id: client_id?,
        client_id_from_hostname,
        version: version?,
        clean_session,
        session_expiry,
        shared_group,
        keep_alive,
    };
    // As the relay (MQTT_ALLOW_PLAINTEXT) and the SMTP destination: credentials that would
    // cross the network readable need an explicit yes.
    if broker.sends_credentials_in_clear() && !broker.allow_plaintext {
        p.add(
            format!("{}.tls", b.path),
            format!(
                "is false while a username or password is set for {}, which is not loopback: \
                 the broker password would cross the network readable. Use tls: true, or set \
                 {}.allowPlaintext: true to accept that",
                broker.host, b.path
            ),
        );
    }
    Some(broker)
}

fn topic_filter_problem(filter: &str) -> Option<&'static str> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("`#` may only be a whole last level, as in `qscloud/#`");
        }
        if level.contains('+') && *level != "+" {
            return Some("`+` may only be a whole level, as in `qscloud/+/reload`");
        }
    }
    if filter.contains('\0') {
        return Some("must not contain NUL");
    }
    if filter.starts_with('$') {
        return Some("must not start with `$` (use sharedSubscriptionGroup for $share)");
    }
    None
}

/// MQTT filter matching, to check that the subscription actually receives app reload events.
pub(crate) fn filter_matches(filter: &str, topic: &str) -> bool {
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn parse_topics(
    t: &Node<'_>,
    shared_group: Option<String>,
    p: &mut Problems,
) -> Option<TopicConfig> {
    let root = t.child("subscriptionRoot").string(p);
    if let Some(problem) = root.as_deref().and_then(topic_filter_problem) {
        p.add(format!("{}.subscriptionRoot", t.path), problem);
    }
    let app_reload = t.child("appReload").string(p);
    if let Some(topic) = &app_reload {
        if topic.contains(['+', '#', '\0']) {
            p.add(
                format!("{}.appReload", t.path),
                "is a topic, not a filter: no `+` or `#`",
            );
        } else if let Some(root) = &root
            && topic_filter_problem(root).is_none()
            && !filter_matches(root, topic)
            && !filter_matches(root, &format!("{}/x", topic.trim_end_matches('/')))
        {
            p.add(
                format!("{}.appReload", t.path),
                format!(
                    "`{topic}` is not covered by subscriptionRoot `{root}`: no app reload event would arrive"
                ),
            );
        }
    }
    Some(TopicConfig {
        subscription_root: root?,
        app_reload: app_reload?.trim_end_matches('/').to_owned(),
        shared_group,
    })
}
