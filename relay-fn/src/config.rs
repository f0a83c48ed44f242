//! Settings from environment variables. Parsing is pure (a lookup function in, settings or the
//! name of the variable at fault out); fetching secrets from AWS is in [`crate::secrets`].

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use qlik_events::{
    BrokerError, BrokerSettings, TlsItem, TlsSettings, TopicRouting, WebhookSecrets,
};
use secrecy::{ExposeSecret, SecretString};

use crate::decision::{DEFAULT_MAX_BODY_BYTES, MAX_MAX_BODY_BYTES, Policy, RequiredHeader};
/// Reads one variable (kept here under its old path; it lives in the leaf [`crate::env`]).
pub use crate::env::var;

pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";
pub const DEFAULT_CLIENT_ID_PREFIX: &str = "qlik-relay";
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longer than the 7 days for which Qlik keeps failed deliveries and lets them be resent, so a
/// resend always passes; a captured request stops being replayable after it.
pub const DEFAULT_MAX_EVENT_AGE: Duration = Duration::from_secs(8 * 24 * 3600);

/// A setting that is missing or wrong, named by its variable. Never contains a secret value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {problem}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub problem: String,
    /// The setting may be right and what it points to unreachable for now (Secrets Manager
    /// not answering): starting again later may work, so this is not a configuration error
    /// for the exit code.
    pub transient: bool,
}

impl ConfigError {
    pub fn new(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            variable,
            problem: problem.into(),
            transient: false,
        }
    }

    /// What the setting names could not be reached; a later start may succeed.
    pub fn transient(variable: &'static str, problem: impl Into<String>) -> Self {
        Self {
            transient: true,
            ..Self::new(variable, problem)
        }
    }
}

/// Secret values, wherever they came from (environment or Secrets Manager).
#[derive(Debug, Default, Clone)]
pub struct Secrets {
    /// Comma-separated webhook secret(s), and the variable they came from (for error messages).
    pub webhook_secret: Option<(SecretString, &'static str)>,
    pub mqtt_password: Option<SecretString>,
    pub required_header_value: Option<SecretString>,
    /// PEM text from the secret, for brokers that need a private CA or mutual TLS (AWS IoT
    /// Core) where shipping files inside a Lambda package is awkward.
    pub mqtt_ca_pem: Option<String>,
    pub mqtt_client_identity: Option<qlik_events::ClientIdentityPem>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Bounds on each HTTP connection in HTTP mode ([`crate::http_server`]) (`HTTP_HEADER_TIMEOUT_SECS`, `HTTP_BODY_TIMEOUT_SECS`,
/// `HTTP_IDLE_TIMEOUT_SECS`, `HTTP_MAX_CONNECTIONS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// From the first byte of a request to the end of its headers; then `408` and close.
    pub header_timeout: Duration,
    /// From the end of the headers to the end of the body; then `408` and close.
    pub body_timeout: Duration,
    /// How long a connection may wait for its next request (keep-alive); then it is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait until one closes.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub policy: Policy,
    /// `None`: no `MQTT_URL`; only allowed when the embedded broker is compiled in.
    pub broker: Option<BrokerSettings>,
    pub publish_timeout: Duration,
    pub listen_addr: SocketAddr,
    /// `METRICS_LISTEN_ADDR`: `/healthz` and `/metrics` on their own listener, off `listen_addr`.
    pub metrics_listen_addr: Option<SocketAddr>,
    pub http_limits: HttpLimits,
}

fn parse_bool(
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
) -> Result<bool, ConfigError> {
    match var(env, name)
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false" | "0" | "no" | "off") => Ok(false),
        Some("true" | "1" | "yes" | "on") => Ok(true),
        Some(other) => Err(ConfigError::new(
            name,
            format!("`{other}` is not true or false"),
        )),
    }
}

fn parse_number<T>(
    env: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    range: std::ops::RangeInclusive<T>,
) -> Result<Option<T>, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = var(env, name) else {
        return Ok(None);
    };
    let value: T = raw
        .parse()
        .map_err(|_| ConfigError::new(name, format!("`{raw}` is not a whole number")))?;
    if !range.contains(&value) {
        return Err(ConfigError::new(
            name,
            format!("{value} is outside {}..={}", range.start(), range.end()),
        ));
    }
    Ok(Some(value))
}

/// A client id unique to this process, so concurrent Lambda environments never take over each
/// other's session (a broker disconnects the older client when an id is reused).
pub fn unique_client_id(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    let tag = (u64::from(std::process::id()) << 32 | u64::from(nanos)) & 0xffff_ffff_ffff;
    format!("{prefix}-{tag:012x}")
}

impl RelayConfig {
    pub fn from_env(
        env: &dyn Fn(&str) -> Option<String>,
        secrets: Secrets,
    ) -> Result<Self, ConfigError> {
        let Secrets {
            webhook_secret,
            mqtt_password,
            required_header_value,
            mqtt_ca_pem,
            mqtt_client_identity,
        } = secrets;
        let policy = Policy {
            secrets: webhook_secrets(webhook_secret)?,
            max_body_bytes: parse_number(env, "MAX_BODY_BYTES", 1024..=MAX_MAX_BODY_BYTES)?
                .unwrap_or(DEFAULT_MAX_BODY_BYTES),
            allowed_tenants: allowed_tenants(env)?,
            max_event_age: max_event_age(env)?,
            required_header: required_header(env, required_header_value)?,
            routing: topic_routing(env)?,
            butler_compat: parse_bool(env, "BUTLER_COMPAT")?,
        };
        let broker = match var(env, "MQTT_URL") {
            None => None,
            Some(url) => Some(broker_settings(
                env,
                &url,
                mqtt_password,
                mqtt_ca_pem,
                mqtt_client_identity,
            )?),
        };
        let publish_timeout = parse_number(env, "PUBLISH_TIMEOUT_MS", 100..=60_000u64)?
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_PUBLISH_TIMEOUT);
        Ok(Self {
            policy,
            broker,
            publish_timeout,
            listen_addr: listen_addr(env)?,
            metrics_listen_addr: metrics_listen_addr(env)?,
            http_limits: http_limits(env)?,
        })
    }
}

/// `MAX_EVENT_AGE_SECS`: unset → 8 days, `0` → no check.
fn max_event_age(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Duration>, ConfigError> {
    Ok(
        match parse_number(env, "MAX_EVENT_AGE_SECS", 0..=31_536_000u64)? {
            None => Some(DEFAULT_MAX_EVENT_AGE),
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
        },
    )
}

/// HTTP mode's protection against slow and idle clients.
fn http_limits(env: &dyn Fn(&str) -> Option<String>) -> Result<HttpLimits, ConfigError> {
    let defaults = HttpLimits::default();
    let secs = |name, default: Duration| {
        parse_number(env, name, 1..=3600u64)
            .map(|value| value.map(Duration::from_secs).unwrap_or(default))
    };
    Ok(HttpLimits {
        header_timeout: secs("HTTP_HEADER_TIMEOUT_SECS", defaults.header_timeout)?,
        body_timeout: secs("HTTP_BODY_TIMEOUT_SECS", defaults.body_timeout)?,
        idle_timeout: secs("HTTP_IDLE_TIMEOUT_SECS", defaults.idle_timeout)?,
        max_connections: parse_number(env, "HTTP_MAX_CONNECTIONS", 1..=65_536usize)?
            .unwrap_or(defaults.max_connections),
    })
}

fn webhook_secrets(
    secret: Option<(SecretString, &'static str)>,
) -> Result<WebhookSecrets, ConfigError> {
    let (secret, variable) = secret.ok_or_else(|| {
        ConfigError::new(
            "WEBHOOK_SECRET",
            "not set: set WEBHOOK_SECRET, or WEBHOOK_SECRET_ARN to a Secrets Manager secret",
        )
    })?;
    WebhookSecrets::from_list(secret.expose_secret())
        .map_err(|e| ConfigError::new(variable, e.to_string()))
}

fn allowed_tenants(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<HashSet<String>>, ConfigError> {
    let allowed = var(env, "ALLOWED_TENANTS").map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect::<HashSet<_>>()
    });
    if allowed.as_ref().is_some_and(HashSet::is_empty) {
        return Err(ConfigError::new("ALLOWED_TENANTS", "lists no tenant id"));
    }
    Ok(allowed)
}

fn required_header(
    env: &dyn Fn(&str) -> Option<String>,
    value: Option<SecretString>,
) -> Result<Option<RequiredHeader>, ConfigError> {
    match (var(env, "REQUIRED_HEADER_NAME"), value) {
        (None, None) => Ok(None),
        (Some(name), Some(value)) => Ok(Some(RequiredHeader {
            name: http::HeaderName::try_from(name.as_str()).map_err(|_| {
                ConfigError::new(
                    "REQUIRED_HEADER_NAME",
                    format!("`{name}` is not a header name"),
                )
            })?,
            value,
        })),
        (Some(_), None) => Err(ConfigError::new(
            "REQUIRED_HEADER_VALUE",
            "not set, but REQUIRED_HEADER_NAME is",
        )),
        (None, Some(_)) => Err(ConfigError::new(
            "REQUIRED_HEADER_NAME",
            "not set, but a required header value is",
        )),
    }
}

fn topic_routing(env: &dyn Fn(&str) -> Option<String>) -> Result<TopicRouting, ConfigError> {
    match (var(env, "MQTT_TOPIC_TEMPLATE"), var(env, "MQTT_TOPIC_ROOT")) {
        (Some(template), _) => {
            template
                .parse()
                .map(TopicRouting::Template)
                .map_err(|e: qlik_events::TopicError| {
                    ConfigError::new("MQTT_TOPIC_TEMPLATE", e.to_string())
                })
        }
        (None, Some(root)) => TopicRouting::with_root(&root)
            .map_err(|e| ConfigError::new("MQTT_TOPIC_ROOT", e.to_string())),
        (None, None) => Ok(TopicRouting::default()),
    }
}

const TLS_FILE_VARIABLES: [&str; 3] = [
    "MQTT_CA_FILE",
    "MQTT_CLIENT_CERT_FILE",
    "MQTT_CLIENT_KEY_FILE",
];

/// The broker from `MQTT_URL`, its password, and for `mqtts://` its certificates: files named
/// by variables, or PEM text from the secret.
fn broker_settings(
    env: &dyn Fn(&str) -> Option<String>,
    url: &str,
    password: Option<SecretString>,
    ca_pem: Option<String>,
    client_identity_pem: Option<qlik_events::ClientIdentityPem>,
) -> Result<BrokerSettings, ConfigError> {
    let client_id = unique_client_id(
        &var(env, "MQTT_CLIENT_ID").unwrap_or_else(|| DEFAULT_CLIENT_ID_PREFIX.to_owned()),
    );
    let allow_plaintext = parse_bool(env, "MQTT_ALLOW_PLAINTEXT")?;
    let mut broker = BrokerSettings::from_url(url, &client_id)
        .map_err(|e| ConfigError::new("MQTT_URL", e.to_string()))?;
    broker.password = password;
    if broker.sends_credentials_in_clear() {
        if !allow_plaintext {
            return Err(ConfigError::new(
                "MQTT_URL",
                format!(
                    "is mqtt:// (plain TCP) with a user name or password to {}, which is not \
                     loopback: the broker password would cross the network readable. Use \
                     mqtts://, or set MQTT_ALLOW_PLAINTEXT=true to accept that",
                    broker.host
                ),
            ));
        }
        tracing::warn!(
            broker = %broker.display_url(),
            "MQTT_ALLOW_PLAINTEXT=true: the broker password and every event cross the network unencrypted"
        );
    }
    let Some(tls) = broker.tls.as_mut() else {
        if ca_pem.is_some() || client_identity_pem.is_some() {
            return Err(ConfigError::new(
                "MQTT_URL",
                "is mqtt:// (plain TCP), but the secret holds TLS certificates; use mqtts://",
            ));
        }
        if let Some(name) = TLS_FILE_VARIABLES
            .into_iter()
            .find(|name| var(env, name).is_some())
        {
            return Err(ConfigError::new(
                name,
                "set, but MQTT_URL is mqtt:// (plain TCP); use mqtts://",
            ));
        }
        return Ok(broker);
    };
    *tls = TlsSettings {
        ca_file: var(env, "MQTT_CA_FILE").map(PathBuf::from),
        client_cert: var(env, "MQTT_CLIENT_CERT_FILE").map(PathBuf::from),
        client_key: var(env, "MQTT_CLIENT_KEY_FILE").map(PathBuf::from),
        ca_pem,
        client_identity_pem,
    };
    // Read the files now: a wrong path fails the cold start, not every request.
    broker
        .rustls_config()
        .map_err(|e| ConfigError::new(tls_variable(&e), e.to_string()))?;
    Ok(broker)
}

/// The setting a certificate or key error comes from.
fn tls_variable(error: &BrokerError) -> &'static str {
    match error {
        BrokerError::ClientAuthIncomplete => "MQTT_CLIENT_CERT_FILE",
        BrokerError::File { item, .. } | BrokerError::Pem { item, .. } => match item {
            TlsItem::CaFile => "MQTT_CA_FILE",
            TlsItem::ClientCertFile => "MQTT_CLIENT_CERT_FILE",
            TlsItem::ClientKeyFile => "MQTT_CLIENT_KEY_FILE",
            // PEM text comes only from the Secrets Manager secret.
            TlsItem::CaText | TlsItem::ClientCertText | TlsItem::ClientKeyText => {
                "WEBHOOK_SECRET_ARN"
            }
        },
        _ => "MQTT_URL",
    }
}

fn listen_addr(env: &dyn Fn(&str) -> Option<String>) -> Result<SocketAddr, ConfigError> {
    let listen = var(env, "LISTEN_ADDR").unwrap_or_else(|| DEFAULT_LISTEN_ADDR.to_owned());
    listen.parse().map_err(|_| {
        ConfigError::new(
            "LISTEN_ADDR",
            format!("`{listen}` is not host:port, e.g. 127.0.0.1:8080"),
        )
    })
}

fn metrics_listen_addr(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<SocketAddr>, ConfigError> {
    let Some(listen) = var(env, "METRICS_LISTEN_ADDR") else {
        return Ok(None);
    };
    let addr: SocketAddr = listen.parse().map_err(|_| {
        ConfigError::new(
            "METRICS_LISTEN_ADDR",
            format!("`{listen}` is not host:port, e.g. 127.0.0.1:9465"),
        )
    })?;
    if listen_addr(env)? == addr {
        return Err(ConfigError::new(
            "METRICS_LISTEN_ADDR",
            format!(
                "`{listen}` is LISTEN_ADDR too; give another port, or leave it unset to serve /metrics beside the webhook"
            ),
        ));
    }
    Ok(Some(addr))
}

/// Secrets from plain environment variables (local, on-prem). Secrets Manager ARNs are handled
/// by [`crate::secrets::resolve`], which falls back to this.
pub fn secrets_from_env(env: &dyn Fn(&str) -> Option<String>) -> Secrets {
    let secret = |name| var(env, name).map(SecretString::from);
    Secrets {
        webhook_secret: secret("WEBHOOK_SECRET").map(|s| (s, "WEBHOOK_SECRET")),
        mqtt_password: secret("MQTT_PASSWORD"),
        required_header_value: secret("REQUIRED_HEADER_VALUE"),
        mqtt_ca_pem: None,
        mqtt_client_identity: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "config-test-secret-0123456789abcdefghij";

    fn load(vars: &[(&str, &str)]) -> Result<RelayConfig, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |name: &str| map.get(name).cloned();
        RelayConfig::from_env(&env, secrets_from_env(&env))
    }

    fn err(vars: &[(&str, &str)]) -> ConfigError {
        load(vars).unwrap_err()
    }

    #[test]
    fn minimal_settings_give_the_documented_defaults() {
        let config = load(&[("WEBHOOK_SECRET", SECRET), ("MQTT_URL", "mqtt://localhost")]).unwrap();
        assert_eq!(config.policy.max_body_bytes, 256 * 1024);
        assert_eq!(config.policy.routing, TopicRouting::default());
        assert!(!config.policy.butler_compat);
        assert!(config.policy.allowed_tenants.is_none());
        assert_eq!(
            config.policy.max_event_age,
            Some(Duration::from_secs(8 * 24 * 3600)),
            "longer than Qlik's 7 days of resends"
        );
        assert_eq!(config.http_limits, HttpLimits::default());
        assert_eq!(
            config.metrics_listen_addr, None,
            "/metrics beside the webhook"
        );
        assert_eq!(config.http_limits.header_timeout, Duration::from_secs(10));
        assert_eq!(config.http_limits.body_timeout, Duration::from_secs(30));
        assert_eq!(config.http_limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.http_limits.max_connections, 1024);
        assert_eq!(config.publish_timeout, Duration::from_secs(5));
        assert_eq!(config.listen_addr.to_string(), "127.0.0.1:8080");
        let broker = config.broker.unwrap();
        assert!(broker.client_id.starts_with("qlik-relay-"));
        assert!(
            broker.client_id.len() <= 23,
            "MQTT 3.1.1 brokers must accept it"
        );
    }

    #[test]
    fn each_bad_setting_names_its_variable() {
        let base = [("WEBHOOK_SECRET", SECRET), ("MQTT_URL", "mqtt://localhost")];
        let with = |extra: (&'static str, &'static str)| {
            let mut v = base.to_vec();
            v.push(extra);
            err(&v).variable
        };
        assert_eq!(err(&[("MQTT_URL", "mqtt://h")]).variable, "WEBHOOK_SECRET");
        assert_eq!(
            err(&[("WEBHOOK_SECRET", "too-short")]).variable,
            "WEBHOOK_SECRET"
        );
        assert_eq!(with(("MQTT_URL", "http://h")), "MQTT_URL");
        assert_eq!(with(("MAX_BODY_BYTES", "lots")), "MAX_BODY_BYTES");
        assert_eq!(with(("MAX_BODY_BYTES", "10")), "MAX_BODY_BYTES");
        assert_eq!(with(("BUTLER_COMPAT", "maybe")), "BUTLER_COMPAT");
        assert_eq!(
            with(("MQTT_TOPIC_TEMPLATE", "a/{nope}")),
            "MQTT_TOPIC_TEMPLATE"
        );
        assert_eq!(with(("MQTT_TOPIC_ROOT", "a/#")), "MQTT_TOPIC_ROOT");
        assert_eq!(with(("LISTEN_ADDR", "localhost")), "LISTEN_ADDR");
        assert_eq!(with(("METRICS_LISTEN_ADDR", "9465")), "METRICS_LISTEN_ADDR");
        assert_eq!(
            with(("METRICS_LISTEN_ADDR", DEFAULT_LISTEN_ADDR)),
            "METRICS_LISTEN_ADDR"
        );
        assert_eq!(with(("PUBLISH_TIMEOUT_MS", "0")), "PUBLISH_TIMEOUT_MS");
        assert_eq!(with(("MAX_EVENT_AGE_SECS", "-1")), "MAX_EVENT_AGE_SECS");
        assert_eq!(with(("MAX_BODY_BYTES", "2097152")), "MAX_BODY_BYTES");
        for name in [
            "HTTP_HEADER_TIMEOUT_SECS",
            "HTTP_BODY_TIMEOUT_SECS",
            "HTTP_IDLE_TIMEOUT_SECS",
            "HTTP_MAX_CONNECTIONS",
        ] {
            assert_eq!(with((name, "0")), name);
            assert_eq!(with((name, "soon")), name);
        }
        assert_eq!(
            with(("MQTT_ALLOW_PLAINTEXT", "maybe")),
            "MQTT_ALLOW_PLAINTEXT"
        );
        assert_eq!(with(("ALLOWED_TENANTS", " , ")), "ALLOWED_TENANTS");
        assert_eq!(
            with(("REQUIRED_HEADER_NAME", "x-token")),
            "REQUIRED_HEADER_VALUE"
        );
        assert_eq!(with(("MQTT_CA_FILE", "/tmp/ca.pem")), "MQTT_CA_FILE");
    }

    #[test]
    fn tls_files_are_checked_at_start_up() {
        let e = err(&[
            ("WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtts://relay@broker.example.com"),
            ("MQTT_CA_FILE", "/nonexistent/ca.pem"),
        ]);
        assert_eq!(e.variable, "MQTT_CA_FILE");
        assert!(e.problem.contains("/nonexistent/ca.pem"));
    }

    #[test]
    fn errors_never_contain_a_secret() {
        let short = "short-secret-value";
        let e = err(&[("WEBHOOK_SECRET", short), ("MQTT_URL", "mqtt://h")]);
        assert!(!e.to_string().contains(short), "{e}");
        let e = err(&[
            ("WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://u:pa55word@h"),
        ]);
        assert!(!e.to_string().contains("pa55word"), "{e}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let config = load(&[
            ("WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://h"),
            ("ALLOWED_TENANTS", ""),
            ("MAX_EVENT_AGE_SECS", " "),
            ("MQTT_TOPIC_TEMPLATE", ""),
        ])
        .unwrap();
        assert!(config.policy.allowed_tenants.is_none());
        assert_eq!(config.policy.max_event_age, Some(DEFAULT_MAX_EVENT_AGE));
    }

    #[test]
    fn max_event_age_zero_turns_the_check_off() {
        let base = [("WEBHOOK_SECRET", SECRET), ("MQTT_URL", "mqtt://localhost")];
        let age = |value| {
            let mut vars = base.to_vec();
            vars.push(("MAX_EVENT_AGE_SECS", value));
            load(&vars).unwrap().policy.max_event_age
        };
        assert_eq!(age("0"), None);
        assert_eq!(age("3600"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn the_largest_body_still_fits_in_an_mqtt_packet() {
        let largest = MAX_MAX_BODY_BYTES.to_string();
        let config = load(&[
            ("WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://localhost"),
            ("MAX_BODY_BYTES", &largest),
        ])
        .unwrap();
        // Room left for the longest topic and what BUTLER_COMPAT adds.
        assert!(config.policy.max_body_bytes + 64 * 1024 <= qlik_events::MAX_PACKET_BYTES);
        let e = err(&[
            ("WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://localhost"),
            ("MAX_BODY_BYTES", "6291456"),
        ]);
        assert_eq!(e.variable, "MAX_BODY_BYTES");
    }

    #[test]
    fn credentials_over_plain_tcp_need_loopback_or_an_explicit_yes() {
        let remote = [
            ("WEBHOOK_SECRET", SECRET),
            ("MQTT_URL", "mqtt://relay@broker.example.com"),
            ("MQTT_PASSWORD", "broker-password"),
        ];
        let e = err(&remote);
        assert_eq!(e.variable, "MQTT_URL");
        assert!(e.problem.contains("MQTT_ALLOW_PLAINTEXT"), "{e}");
        assert!(!e.to_string().contains("broker-password"), "{e}");
        let mut allowed = remote.to_vec();
        allowed.push(("MQTT_ALLOW_PLAINTEXT", "true"));
        assert!(load(&allowed).is_ok());
        for fine in [
            "mqtt://relay@127.0.0.1:1883",
            "mqtt://relay@localhost",
            "mqtts://relay@broker.example.com",
            "mqtt://broker.example.com",
        ] {
            let config = load(&[
                ("WEBHOOK_SECRET", SECRET),
                ("MQTT_URL", fine),
                ("MQTT_PASSWORD", "broker-password"),
            ]);
            assert!(config.is_ok(), "{fine}: {:?}", config.err());
        }
    }

    #[test]
    fn optional_checks_are_configured() {
        let config = load(&[
            ("WEBHOOK_SECRET", &format!("{SECRET},{SECRET}-rotated")),
            ("MQTT_URL", "mqtts://relay@h:8884?version=5"),
            ("MQTT_PASSWORD", "broker-password"),
            ("ALLOWED_TENANTS", "t1, t2"),
            ("MAX_EVENT_AGE_SECS", "3600"),
            ("REQUIRED_HEADER_NAME", "X-Relay-Token"),
            ("REQUIRED_HEADER_VALUE", "token-value"),
            ("BUTLER_COMPAT", "true"),
            ("MQTT_CLIENT_ID", "acme"),
        ])
        .unwrap();
        assert_eq!(config.policy.secrets.len(), 2);
        assert_eq!(config.policy.allowed_tenants.unwrap().len(), 2);
        assert_eq!(config.policy.max_event_age, Some(Duration::from_secs(3600)));
        assert!(config.policy.butler_compat);
        assert_eq!(config.policy.required_header.unwrap().name, "x-relay-token");
        let broker = config.broker.unwrap();
        assert_eq!(broker.port, 8884);
        assert!(broker.password.is_some());
        assert!(broker.client_id.starts_with("acme-"));
    }

    #[test]
    fn certificates_from_the_secret_need_tls_and_must_be_pem() {
        let env = |name: &str| match name {
            "MQTT_URL" => Some("mqtt://broker.example.com".to_owned()),
            _ => None,
        };
        let secrets = || Secrets {
            webhook_secret: Some((SecretString::from(SECRET.to_owned()), "WEBHOOK_SECRET_ARN")),
            mqtt_ca_pem: Some("not a certificate".to_owned()),
            ..Secrets::default()
        };
        let e = RelayConfig::from_env(&env, secrets()).unwrap_err();
        assert_eq!(e.variable, "MQTT_URL");
        let tls_env = |name: &str| match name {
            "MQTT_URL" => Some("mqtts://broker.example.com".to_owned()),
            _ => None,
        };
        let e = RelayConfig::from_env(&tls_env, secrets()).unwrap_err();
        assert_eq!(e.variable, "WEBHOOK_SECRET_ARN");
        assert!(e.problem.contains("CA certificate text"), "{e}");
        let identity = Secrets {
            mqtt_ca_pem: None,
            mqtt_client_identity: Some(qlik_events::ClientIdentityPem {
                certificate: "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n"
                    .to_owned(),
                key: SecretString::from("private-key-material".to_owned()),
            }),
            ..secrets()
        };
        let e = RelayConfig::from_env(&tls_env, identity).unwrap_err();
        assert_eq!(e.variable, "WEBHOOK_SECRET_ARN");
        assert!(!e.to_string().contains("private-key-material"), "{e}");
    }

    #[test]
    fn each_tls_item_names_the_setting_it_comes_from() {
        let pem = |item| BrokerError::Pem {
            item,
            path: PathBuf::new(),
            expected: "certificate",
        };
        let file = |item| BrokerError::File {
            item,
            path: PathBuf::from("/x"),
            reason: "gone".to_owned(),
        };
        assert_eq!(tls_variable(&file(TlsItem::CaFile)), "MQTT_CA_FILE");
        assert_eq!(tls_variable(&pem(TlsItem::CaFile)), "MQTT_CA_FILE");
        assert_eq!(
            tls_variable(&file(TlsItem::ClientCertFile)),
            "MQTT_CLIENT_CERT_FILE"
        );
        assert_eq!(
            tls_variable(&pem(TlsItem::ClientKeyFile)),
            "MQTT_CLIENT_KEY_FILE"
        );
        for item in [
            TlsItem::CaText,
            TlsItem::ClientCertText,
            TlsItem::ClientKeyText,
        ] {
            assert_eq!(tls_variable(&pem(item)), "WEBHOOK_SECRET_ARN");
        }
        assert_eq!(
            tls_variable(&BrokerError::ClientAuthIncomplete),
            "MQTT_CLIENT_CERT_FILE"
        );
        assert_eq!(
            tls_variable(&BrokerError::Tls("no roots".into())),
            "MQTT_URL"
        );
    }
}
