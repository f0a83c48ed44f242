//! MQTT broker connection settings: from a URL (`mqtt://` / `mqtts://user@host:port`) or from parts
//! (Butler's `mqttForward.broker` block), turned into rumqttc options for MQTT 3.1.1 or 5.

use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    #[default]
    V311,
    V5,
}

impl std::str::FromStr for MqttVersion {
    type Err = BrokerError;

    fn from_str(s: &str) -> Result<Self, BrokerError> {
        match s.trim() {
            "3" | "3.1.1" | "311" | "4" => Ok(Self::V311),
            "5" | "5.0" => Ok(Self::V5),
            other => Err(BrokerError::Version(other.to_owned())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("broker URL is not a URL: {0}")]
    Url(String),
    #[error("broker URL scheme `{0}` is not supported: use mqtt:// (plain TCP) or mqtts:// (TLS)")]
    Scheme(String),
    #[error("broker URL has no host")]
    NoHost,
    #[error(
        "broker URL contains a password: put it in the password setting instead, so it never shows in logs"
    )]
    PasswordInUrl,
    #[error("broker URL has unknown query parameter `{0}` (known: version, client_id, keep_alive)")]
    UnknownParameter(String),
    #[error("MQTT version `{0}` is not supported: use 3.1.1 or 5")]
    Version(String),
    #[error("keep_alive `{0}` is not a number of seconds between 5 and 3600")]
    KeepAlive(String),
    #[error("cannot read {item} file {path}: {reason}")]
    File {
        item: TlsItem,
        path: PathBuf,
        reason: String,
    },
    #[error("{item} {path} holds no usable PEM {expected}")]
    Pem {
        item: TlsItem,
        /// Empty for text given inline.
        path: PathBuf,
        expected: &'static str,
    },
    #[error("a client certificate needs its key, and a key needs its certificate")]
    ClientAuthIncomplete,
    #[error("TLS configuration refused: {0}")]
    Tls(String),
}

/// Which certificate or key a TLS error is about, and whether it came from a file or as text
/// (see [`TlsSettings`]), so callers can name the setting at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsItem {
    CaFile,
    CaText,
    ClientCertFile,
    ClientCertText,
    ClientKeyFile,
    ClientKeyText,
}

impl std::fmt::Display for TlsItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsItem::CaFile => "CA",
            TlsItem::CaText => "CA certificate text",
            TlsItem::ClientCertFile => "client certificate",
            TlsItem::ClientCertText => "client certificate text",
            TlsItem::ClientKeyFile => "client key",
            TlsItem::ClientKeyText => "client key text",
        })
    }
}

/// Where a TLS connection gets its trust anchors and (optionally) its client identity.
#[derive(Debug, Clone, Default)]
pub struct TlsSettings {
    /// PEM file with the CA certificate(s) to trust instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key, for brokers that authenticate clients by certificate
    /// (AWS IoT Core, Azure Event Grid).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// The same as text, for deployments where files are awkward (a Lambda function reads them
    /// from Secrets Manager). Text takes precedence over the files.
    pub ca_pem: Option<String>,
    pub client_identity_pem: Option<ClientIdentityPem>,
}

/// A client certificate chain and its private key, as PEM text.
#[derive(Clone)]
pub struct ClientIdentityPem {
    pub certificate: String,
    pub key: SecretString,
}

impl std::fmt::Debug for ClientIdentityPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientIdentityPem(certificate, key: ***)")
    }
}

#[derive(Clone)]
pub struct BrokerSettings {
    pub host: String,
    pub port: u16,
    /// `None`: plain TCP.
    pub tls: Option<TlsSettings>,
    pub username: Option<String>,
    pub password: Option<SecretString>,
    pub version: MqttVersion,
    pub client_id: String,
    pub keep_alive: Duration,
}

impl std::fmt::Debug for BrokerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerSettings")
            .field("url", &self.display_url())
            .field("tls", &self.tls)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("version", &self.version)
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);

/// The largest MQTT packet these clients send or accept, for both protocol versions. A PUBLISH
/// over it fails before it leaves, so the relay must never accept a body that cannot fit.
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;

/// Bytes a QoS 1 PUBLISH adds around its topic and payload, at most: fixed header (1 + up to 4
/// for the remaining length), topic length (2), packet id (2), MQTT 5 property length (1).
pub const PUBLISH_OVERHEAD_BYTES: usize = 10;

/// Whether a QoS 1 PUBLISH of `payload_len` bytes on `topic` fits in [`MAX_PACKET_BYTES`].
pub fn publish_fits(topic: &str, payload_len: usize) -> bool {
    topic.len() + payload_len + PUBLISH_OVERHEAD_BYTES <= MAX_PACKET_BYTES
}

/// `localhost`, `127.0.0.0/8`, `::1` (with or without brackets): hosts whose traffic never
/// leaves the machine.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl BrokerSettings {
    /// A plain-TCP broker with no credentials.
    pub fn new(host: impl Into<String>, port: u16, client_id: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            tls: None,
            username: None,
            password: None,
            version: MqttVersion::V311,
            client_id: client_id.into(),
            keep_alive: DEFAULT_KEEP_ALIVE,
        }
    }

    /// Parses `mqtt://[user@]host[:port][?version=5&client_id=x&keep_alive=30]` or `mqtts://…`.
    /// Default ports are 1883 and 8883. `client_id` defaults to `default_client_id`.
    pub fn from_url(url: &str, default_client_id: &str) -> Result<Self, BrokerError> {
        let parsed = url::Url::parse(url.trim()).map_err(|e| BrokerError::Url(e.to_string()))?;
        let tls = match parsed.scheme() {
            "mqtt" | "tcp" => None,
            "mqtts" | "ssl" => Some(TlsSettings::default()),
            other => return Err(BrokerError::Scheme(other.to_owned())),
        };
        if parsed.password().is_some() {
            return Err(BrokerError::PasswordInUrl);
        }
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or(BrokerError::NoHost)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = parsed
            .port()
            .unwrap_or(if tls.is_some() { 8883 } else { 1883 });
        let username = Some(parsed.username()).filter(|u| !u.is_empty()).map(|u| {
            url::form_urlencoded::parse(format!("u={u}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| u.to_owned())
        });
        let mut settings = Self {
            tls,
            username,
            ..Self::new(host, port, default_client_id)
        };
        for (key, value) in parsed.query_pairs() {
            match key.as_ref() {
                "version" => settings.version = value.parse()?,
                "client_id" => settings.client_id = value.into_owned(),
                "keep_alive" => {
                    let secs: u64 = value
                        .parse()
                        .ok()
                        .filter(|s| (5..=3600).contains(s))
                        .ok_or_else(|| BrokerError::KeepAlive(value.to_string()))?;
                    settings.keep_alive = Duration::from_secs(secs);
                }
                other => return Err(BrokerError::UnknownParameter(other.to_owned())),
            }
        }
        Ok(settings)
    }

    /// True when a user name and password would cross the network unencrypted: plain `mqtt://`
    /// with a user (credentials are only sent with one) to a host that is not loopback.
    pub fn sends_credentials_in_clear(&self) -> bool {
        self.tls.is_none() && self.username.is_some() && !is_loopback_host(&self.host)
    }

    /// The broker as a URL without secrets, for logs.
    pub fn display_url(&self) -> String {
        let scheme = if self.tls.is_some() { "mqtts" } else { "mqtt" };
        let user = self
            .username
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{user}{host}:{}", self.port)
    }

    /// Loads certificates and keys now, so a bad file fails at start-up rather than at the
    /// first connection.
    pub fn rustls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, BrokerError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        if tls.client_identity_pem.is_none()
            && tls.client_cert.is_some() != tls.client_key.is_some()
        {
            return Err(BrokerError::ClientAuthIncomplete);
        }
        let mut roots = rustls::RootCertStore::empty();
        let ca_certs = match (&tls.ca_pem, &tls.ca_file) {
            (Some(pem), _) => Some(parse_certs(pem.as_bytes(), TlsItem::CaText, None)?),
            (None, Some(path)) => Some(read_certs(path, TlsItem::CaFile)?),
            (None, None) => None,
        };
        match ca_certs {
            Some(certs) => {
                for cert in certs {
                    roots
                        .add(cert)
                        .map_err(|e| BrokerError::Tls(format!("CA certificate: {e}")))?;
                }
            }
            None => {
                let native = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(native.certs);
                if roots.is_empty() {
                    return Err(BrokerError::Tls(
                        "no system CA certificates found: set a CA file".to_owned(),
                    ));
                }
            }
        }
        // Name the provider: the workspace links more than one, and rustls will not guess.
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| BrokerError::Tls(e.to_string()))?
            .with_root_certificates(roots);
        let identity = match (&tls.client_identity_pem, &tls.client_cert, &tls.client_key) {
            (Some(pem), _, _) => Some((
                parse_certs(pem.certificate.as_bytes(), TlsItem::ClientCertText, None)?,
                parse_key(
                    pem.key.expose_secret().as_bytes(),
                    TlsItem::ClientKeyText,
                    None,
                )?,
            )),
            (None, Some(cert), Some(key)) => Some((
                read_certs(cert, TlsItem::ClientCertFile)?,
                parse_key(
                    &read_file(key, TlsItem::ClientKeyFile)?,
                    TlsItem::ClientKeyFile,
                    Some(key),
                )?,
            )),
            (None, None, None) => None,
            _ => return Err(BrokerError::ClientAuthIncomplete),
        };
        let config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| BrokerError::Tls(format!("client certificate/key: {e}")))?,
        };
        Ok(Some(Arc::new(config)))
    }

    fn credentials(&self) -> Option<(&str, String)> {
        let user = self.username.as_deref()?;
        let password = self
            .password
            .as_ref()
            .map(|p| p.expose_secret().to_owned())
            .unwrap_or_default();
        Some((user, password))
    }

    fn tls_transport(&self) -> Result<Option<rumqttc::Transport>, BrokerError> {
        Ok(self.rustls_config()?.map(|config| {
            rumqttc::Transport::tls_with_config(rumqttc::TlsConfiguration::Rustls(config))
        }))
    }

    /// rumqttc options for MQTT 3.1.1. `clean_session` false gives a persistent session.
    pub fn mqtt_options(&self, clean_session: bool) -> Result<rumqttc::MqttOptions, BrokerError> {
        let mut options = rumqttc::MqttOptions::new(&self.client_id, &self.host, self.port);
        options.set_keep_alive(self.keep_alive);
        options.set_clean_session(clean_session);
        options.set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
        if let Some((user, password)) = self.credentials() {
            options.set_credentials(user, password);
        }
        if let Some(transport) = self.tls_transport()? {
            options.set_transport(transport);
        }
        Ok(options)
    }

    /// rumqttc options for MQTT 5. A `session_expiry` keeps the session (and queued QoS 1
    /// messages) on the broker that long after a disconnect; `None` ends it with the connection.
    pub fn mqtt_options_v5(
        &self,
        session_expiry: Option<Duration>,
    ) -> Result<rumqttc::v5::MqttOptions, BrokerError> {
        let mut options = rumqttc::v5::MqttOptions::new(&self.client_id, &self.host, self.port);
        options.set_keep_alive(self.keep_alive);
        options.set_clean_start(session_expiry.is_none());
        options.set_session_expiry_interval(
            session_expiry.map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
        );
        options.set_max_packet_size(u32::try_from(MAX_PACKET_BYTES).ok());
        if let Some((user, password)) = self.credentials() {
            options.set_credentials(user, password);
        }
        if let Some(transport) = self.tls_transport()? {
            options.set_transport(transport);
        }
        Ok(options)
    }
}

fn read_file(path: &Path, item: TlsItem) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| BrokerError::File {
        item,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

fn read_certs(
    path: &Path,
    item: TlsItem,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, BrokerError> {
    parse_certs(&read_file(path, item)?, item, Some(path))
}

/// `path` names where the text came from, for the error; `None` for text given inline.
fn parse_certs(
    pem: &[u8],
    item: TlsItem,
    path: Option<&Path>,
) -> Result<Vec<rustls_pki_types::CertificateDer<'static>>, BrokerError> {
    // Stop at a malformed section: the iterator reports it, and reading on could repeat it.
    let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .map_while(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(BrokerError::Pem {
            item,
            path: path.map(Path::to_owned).unwrap_or_default(),
            expected: "certificate",
        });
    }
    Ok(certs)
}

fn parse_key(
    pem: &[u8],
    item: TlsItem,
    path: Option<&Path>,
) -> Result<rustls_pki_types::PrivateKeyDer<'static>, BrokerError> {
    rustls_pki_types::PrivateKeyDer::from_pem_slice(pem)
        .ok()
        .ok_or_else(|| BrokerError::Pem {
            item,
            path: path.map(Path::to_owned).unwrap_or_default(),
            expected: "private key",
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `publish_fits` must never say yes to a PUBLISH that rumqttc then refuses to send.
    #[test]
    fn publish_fits_agrees_with_what_rumqttc_sends() {
        let topic = "qscloud/app/reload/Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
        let largest = MAX_PACKET_BYTES - PUBLISH_OVERHEAD_BYTES - topic.len();
        assert!(publish_fits(topic, largest));
        assert!(!publish_fits(topic, largest + 1));
        let payload = vec![b'x'; largest];
        let mut v4 = rumqttc::Publish::new(topic, rumqttc::QoS::AtLeastOnce, payload.clone());
        v4.pkid = 1;
        let v4 = rumqttc::Packet::Publish(v4);
        assert!(
            v4.write(&mut bytes::BytesMut::new(), MAX_PACKET_BYTES)
                .is_ok()
        );
        let mut v5 = rumqttc::v5::mqttbytes::v5::Publish::new(
            topic,
            rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
            payload,
            None,
        );
        v5.pkid = 1;
        let v5 = rumqttc::v5::mqttbytes::v5::Packet::Publish(v5);
        let max = u32::try_from(MAX_PACKET_BYTES).ok();
        assert!(v5.write(&mut bytes::BytesMut::new(), max).is_ok());
    }

    #[test]
    fn credentials_in_clear_only_over_plain_tcp_to_other_hosts() {
        let clear = |url: &str| {
            let mut broker = BrokerSettings::from_url(url, "id").unwrap();
            broker.password = Some(SecretString::from("pw".to_owned()));
            broker.sends_credentials_in_clear()
        };
        assert!(clear("mqtt://relay@broker.example.com"));
        assert!(clear("mqtt://relay@10.0.0.5:1883"));
        assert!(!clear("mqtts://relay@broker.example.com"));
        for local in ["localhost", "127.0.0.1", "127.1.2.3", "[::1]", "LOCALHOST"] {
            assert!(!clear(&format!("mqtt://relay@{local}")), "{local}");
        }
        assert!(
            !clear("mqtt://broker.example.com"),
            "no user: nothing is sent"
        );
    }

    #[test]
    fn plain_and_tls_urls_parse_with_default_ports() {
        let s = BrokerSettings::from_url("mqtt://localhost", "relay-1").unwrap();
        assert_eq!(
            (s.host.as_str(), s.port, s.tls.is_none()),
            ("localhost", 1883, true)
        );
        assert_eq!(s.client_id, "relay-1");
        assert_eq!(s.version, MqttVersion::V311);

        let s = BrokerSettings::from_url("mqtts://relay@broker.example.com", "c").unwrap();
        assert_eq!(s.port, 8883);
        assert!(s.tls.is_some());
        assert_eq!(s.username.as_deref(), Some("relay"));
        assert_eq!(s.display_url(), "mqtts://relay@broker.example.com:8883");
    }

    #[test]
    fn query_parameters_set_version_client_id_and_keep_alive() {
        let s =
            BrokerSettings::from_url("mqtt://h:1884?version=5&client_id=abc&keep_alive=60", "c")
                .unwrap();
        assert_eq!(s.port, 1884);
        assert_eq!(s.version, MqttVersion::V5);
        assert_eq!(s.client_id, "abc");
        assert_eq!(s.keep_alive, Duration::from_secs(60));
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        let err = |u: &str| BrokerSettings::from_url(u, "c").unwrap_err().to_string();
        assert!(err("http://h").contains("scheme `http`"));
        assert!(err("mqtt://u:hunter2hunter2@h").contains("contains a password"));
        assert!(!err("mqtt://u:hunter2hunter2@h").contains("hunter2"));
        assert!(err("mqtt://h?qos=2").contains("unknown query parameter `qos`"));
        assert!(err("mqtt://h?version=4.5").contains("version `4.5`"));
        assert!(err("mqtt://h?keep_alive=1").contains("keep_alive"));
        assert!(err("not a url").contains("not a URL"));
    }

    #[test]
    fn debug_hides_the_password() {
        let mut s = BrokerSettings::from_url("mqtt://u@h", "c").unwrap();
        s.password = Some(SecretString::from("hunter2hunter2".to_owned()));
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("***"));
    }

    #[test]
    fn missing_ca_file_is_named() {
        let mut s = BrokerSettings::from_url("mqtts://h", "c").unwrap();
        s.tls = Some(TlsSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        let err = s.mqtt_options(true).unwrap_err();
        assert!(matches!(
            err,
            BrokerError::File {
                item: TlsItem::CaFile,
                ..
            }
        ));
        let err = err.to_string();
        assert!(
            err.starts_with("cannot read CA file /nonexistent/ca.pem: "),
            "{err}"
        );
    }

    #[test]
    fn pem_text_that_is_not_pem_is_named_by_item() {
        let mut s = BrokerSettings::from_url("mqtts://h", "c").unwrap();
        s.tls = Some(TlsSettings {
            ca_pem: Some("not a certificate".to_owned()),
            ..Default::default()
        });
        let err = s.rustls_config().unwrap_err();
        assert!(matches!(
            err,
            BrokerError::Pem {
                item: TlsItem::CaText,
                ..
            }
        ));
        assert_eq!(
            err.to_string(),
            "CA certificate text  holds no usable PEM certificate"
        );
    }

    #[test]
    fn half_a_client_identity_is_refused() {
        let mut s = BrokerSettings::from_url("mqtts://h", "c").unwrap();
        s.tls = Some(TlsSettings {
            client_cert: Some("cert.pem".into()),
            ..Default::default()
        });
        assert!(matches!(
            s.rustls_config(),
            Err(BrokerError::ClientAuthIncomplete)
        ));
    }
}
