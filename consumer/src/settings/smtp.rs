//! Butler's `Butler.emailNotification`: the SMTP server email alerts go through, with
//! nodemailer's meaning of each key (Butler hands them to nodemailer as they are).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::keys::{Custom, KeyDoc, Kind, SECONDS, Span};
use super::node::{Node, Problems};
use super::secret::{Absent, Env, SecretSource, resolve_secret};

/// Key path of Butler's SMTP server settings.
pub const SMTP: &str = "Butler.emailNotification.smtp";
/// SMTP password; wins over `Butler.emailNotification.smtp.auth.password` in the file.
pub const SMTP_PASSWORD_ENV: &str = "SMTP_PASSWORD";

/// `Butler.emailNotification.smtp`.
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
    /// With a login to a server that is not on this machine, STARTTLS is required even without
    /// `requireTLS`: opportunistic STARTTLS is stripped by anyone in the network path, who then
    /// reads the password (`ignoreTLS` with a login is refused when the file is read).
    pub fn security(&self) -> SmtpSecurity {
        if self.secure {
            SmtpSecurity::ImplicitTls
        } else if self.ignore_tls {
            SmtpSecurity::Plain
        } else if self.require_tls || self.login_needs_tls() {
            SmtpSecurity::StartTlsRequired
        } else {
            SmtpSecurity::StartTlsOpportunistic
        }
    }

    /// Whether a login goes to a host beyond this machine, and so must not cross in plain text.
    pub fn login_needs_tls(&self) -> bool {
        self.auth.is_some() && !is_loopback_host(&self.host)
    }

    /// The name checked against the server certificate.
    pub fn tls_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.host)
    }

    /// The server's lines in the `check-config` summary.
    pub(crate) fn summary(&self, s: &mut String) {
        let security = match self.security() {
            SmtpSecurity::ImplicitTls => "TLS (secure: true)",
            SmtpSecurity::StartTlsRequired if !self.require_tls => {
                "STARTTLS required (a login over the network needs TLS)"
            }
            SmtpSecurity::StartTlsRequired => "STARTTLS required",
            SmtpSecurity::StartTlsOpportunistic => "STARTTLS when offered",
            SmtpSecurity::Plain => "plain text (ignoreTLS: true)",
        };
        let _ = writeln!(s, "SMTP: {}:{}, {security}", self.host, self.port);
        if self.security() != SmtpSecurity::Plain {
            let mut tls = format!("  certificate name {}", self.tls_name());
            if let Some(ca) = &self.ca_file {
                let _ = write!(tls, ", CA file {}", ca.display());
            }
            if !self.reject_unauthorized {
                tls.push_str(", ANY certificate accepted (rejectUnauthorized: false)");
            }
            let _ = writeln!(s, "{tls}");
        }
        match &self.auth {
            Some(auth) => {
                let _ = writeln!(
                    s,
                    "  login {}, password: *** {}",
                    auth.user, auth.password_source
                );
            }
            None => {
                let _ = writeln!(s, "  no login");
            }
        }
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

/// Whether some tenant block (Butler's or one in the list) enables email alerts. Looked up in
/// the raw document, so SMTP problems are reported even when that tenant has others.
pub(crate) fn email_wanted(qsc: &Node<'_>) -> bool {
    let mqtt = qsc.at("event.mqtt");
    let mut ignore = Problems::default();
    let mut blocks = vec![mqtt.child("tenant")];
    blocks.extend(mqtt.child("tenants").items(&mut ignore));
    blocks.iter().any(|t| {
        t.at("alert.emailNotification.reloadAppFailure.enable")
            .bool_or(&mut ignore, false)
    })
}

// The consumer's own keys beside Butler's in `emailNotification.smtp`, each declared once:
// the parser reads them by these names, and `SmtpConfig::extension_keys` documents them.
const CA_FILE: Custom = Custom {
    key: "tls.caFile",
    default: "system roots",
};
const TIMEOUT: Span = Span {
    key: "timeoutSeconds",
    default: 30,
    min: 1,
    max: 600,
    unit: SECONDS,
};

impl SmtpConfig {
    /// The consumer's own keys in the SMTP block, with their defaults.
    pub fn extension_keys() -> Vec<KeyDoc> {
        let mut keys = vec![CA_FILE.doc("")];
        keys.extend(TIMEOUT.docs("", ""));
        keys
    }
}

/// `Butler.emailNotification.smtp` (and Butler's master switch `Butler.emailNotification.enable`,
/// without which Butler sends no email either).
pub(crate) fn parse_smtp(email: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Option<SmtpConfig> {
    if !email.expect_map(p, true) {
        return None;
    }
    if email.child("enable").bool_required(p) == Some(false) {
        p.add(
            format!("{}.enable", email.path),
            "is false, but a tenant's alert.emailNotification.reloadAppFailure is enabled: \
             Butler sends no email with it off; set it to true (in the extension file, if \
             Butler itself should keep it off)",
        );
    }
    let s = email.child("smtp");
    if !s.expect_map(p, true) {
        return None;
    }
    let host = s.child("host").real_string(p);
    let port = s
        .child("port")
        .u64_required(p, 1, 65535)
        .and_then(|n| u16::try_from(n).ok());
    let secure = s.child("secure").bool_or(p, false);
    let tls = s.child("tls");
    tls.expect_map(p, false);
    let server_name = tls.child("serverName").opt_string(p);
    let ignore_tls = tls.child("ignoreTLS").bool_or(p, false);
    let require_tls = tls.child("requireTLS").bool_or(p, false);
    if ignore_tls && require_tls && !secure {
        p.add(
            format!("{}.requireTLS", tls.path),
            "contradicts ignoreTLS: true (one forbids STARTTLS, the other demands it)",
        );
    }
    let reject_unauthorized = tls.child("rejectUnauthorized").bool_or(p, true);
    let ca_file = CA_FILE.at(&s).existing_file(p);
    let auth_node = s.child("auth");
    auth_node.expect_map(p, false);
    let auth_enabled = auth_node.child("enable").bool_or(p, false);
    // With both flags set, the contradiction above is the problem to report.
    if ignore_tls
        && !require_tls
        && !secure
        && auth_enabled
        && host.as_deref().is_some_and(|h| !is_loopback_host(h))
    {
        p.add(
            format!("{}.ignoreTLS", tls.path),
            "is true while auth is enabled for a host beyond this machine: the password would \
             cross the network in plain text; use secure: true, or STARTTLS (ignoreTLS: false), \
             or turn auth off",
        );
    }
    let auth = if auth_enabled {
        let user = auth_node.child("user").real_string(p);
        let password = resolve_secret(
            &auth_node.child("password"),
            env,
            &[SMTP_PASSWORD_ENV],
            Absent::Refused,
            p,
        );
        match (user, password) {
            (Some(user), Some((password, password_source))) => Some(SmtpAuth {
                user,
                password,
                password_source,
            }),
            _ => None,
        }
    } else {
        None
    };
    let timeout = TIMEOUT.read(&s.child(TIMEOUT.key), p);
    Some(SmtpConfig {
        host: host?,
        port: port?,
        secure,
        server_name,
        ignore_tls,
        require_tls,
        reject_unauthorized,
        ca_file,
        auth,
        timeout,
    })
}

pub use qlik_events::is_loopback_host;

/// `Qlik Sense (no-reply) <noreply@example.com>` or a bare address. The display name may hold
/// characters RFC 5322 wants quoted (Butler's own sample has parentheses); they are accepted
/// and quoted when the header is written.
pub fn parse_mailbox(text: &str) -> Result<lettre::message::Mailbox, String> {
    let text = text.trim();
    if text.chars().any(char::is_control) {
        return Err("must not contain line breaks or control characters".to_owned());
    }
    if let Ok(mailbox) = text.parse::<lettre::message::Mailbox>() {
        return Ok(mailbox);
    }
    let invalid = || format!("not an email address or `Name <address>` (got `{text}`)");
    let (name, rest) = text.rsplit_once('<').ok_or_else(invalid)?;
    let address = rest.strip_suffix('>').ok_or_else(invalid)?;
    let address = address
        .trim()
        .parse::<lettre::Address>()
        .map_err(|_| invalid())?;
    let name = name.trim().trim_matches('"').trim();
    Ok(lettre::message::Mailbox::new(
        (!name.is_empty()).then(|| name.to_owned()),
        address,
    ))
}
