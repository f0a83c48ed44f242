//! `check-config`: a masked, human-readable summary, or the list of problems.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use qlik_events::MqttVersion;

use super::types::*;

/// `check-config` found nothing wrong ([`crate::exit::OK`]).
pub const EXIT_OK: i32 = crate::exit::OK as i32;
/// The configuration cannot be used ([`crate::exit::CONFIG_INVALID`]).
pub const EXIT_CONFIG_INVALID: i32 = crate::exit::CONFIG_INVALID as i32;

/// Validates the files and writes either a masked summary or every problem to `out`. Returns
/// the process exit code: [`EXIT_OK`] or [`EXIT_CONFIG_INVALID`].
pub fn check_config(path: &Path, extensions: Option<&Path>, out: &mut dyn Write) -> i32 {
    check_config_with_env(path, extensions, &|name| std::env::var(name).ok(), out)
}

/// [`check_config`] with the environment supplied by the caller.
pub fn check_config_with_env(
    path: &Path,
    extensions: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> i32 {
    let (ok, text) = match super::load_with_env(path, extensions, env) {
        // What would stop `run` at start-up is reported here, before deployment: the broker's
        // CA and client certificate files are read, and the destinations are built, compiling
        // their templates. Building has no side effect: no destination connects before it sends.
        Ok(config) => match config
            .broker
            .broker_settings()
            .rustls_config()
            .map_err(|e| format!("{}.broker: {e}", super::parse::FORWARD))
            .and_then(|_| crate::sinks::build(&config).map_err(|e| e.to_string()))
        {
            Ok(_) => {
                let mut text = summary(&config);
                text.push_str("Configuration OK\n");
                (true, text)
            }
            Err(problem) => (
                false,
                format!("Configuration has 1 problem:\n  {problem}\nConfiguration NOT OK\n"),
            ),
        },
        Err(errors) => {
            let mut text = String::new();
            let n = errors.problems.len();
            let _ = writeln!(
                text,
                "Configuration has {n} problem{}:",
                if n == 1 { "" } else { "s" }
            );
            for problem in &errors.problems {
                let _ = writeln!(text, "  {problem}");
            }
            let _ = writeln!(text, "Configuration NOT OK");
            (false, text)
        }
    };
    // A failed write to stdout (closed pipe) should not turn a valid config into a failure.
    let _ = out.write_all(text.as_bytes());
    if ok { EXIT_OK } else { EXIT_CONFIG_INVALID }
}

fn secs(d: std::time::Duration) -> String {
    format!("{}s", d.as_secs())
}

fn chat(kind: &str, c: &ChatAlertCommon) -> String {
    let mut s = format!("{kind} → {}", c.webhook_url.masked());
    match c.message_type {
        MessageType::Basic => s.push_str(", basic message"),
        MessageType::Formatted => {
            let file = c
                .template_file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default();
            let _ = write!(s, ", formatted with {file}");
        }
    }
    let _ = write!(
        s,
        ", script log head/tail {}/{} lines, rate limit {} per app",
        c.head_script_log_lines,
        c.tail_script_log_lines,
        secs(c.rate_limit)
    );
    if c.alert_enable_by_tag.enable {
        let _ = write!(s, ", only apps tagged \"{}\"", c.alert_enable_by_tag.tag);
    }
    if c.basic_content_only {
        s.push_str(", event content only (no tenant API calls)");
    }
    s
}

/// A summary of what the consumer will do, with every secret masked: JWTs and passwords show
/// only where they came from, webhook URLs only scheme and host.
pub fn summary(config: &ConsumerConfig) -> String {
    let mut s = String::new();
    let files: Vec<String> = config
        .sources
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let _ = writeln!(s, "Files: {}", files.join(" + "));
    let _ = writeln!(s, "Tenants ({}):", config.tenants.len());
    for t in &config.tenants {
        let _ = writeln!(s, "  - {} at {}", t.id, t.tenant_url_str());
        let _ = writeln!(s, "      key: {}", t.key_path);
        if let Some(comment) = &t.comment {
            let _ = writeln!(s, "      comment: {comment}");
        }
        let _ = writeln!(s, "      JWT: *** {}", t.jwt_source);
        if let Some(qmc) = &t.qmc_url {
            let _ = writeln!(s, "      QMC link: {qmc}");
        }
        if let Some(hub) = &t.hub_url {
            let _ = writeln!(s, "      hub link: {hub}");
        }
        let mut alerts = Vec::new();
        if let Some(teams) = &t.alert.teams {
            alerts.push(chat("Teams", &teams.common));
        }
        if let Some(slack) = &t.alert.slack {
            let mut line = chat("Slack", &slack.common);
            if let Some(channel) = &slack.channel {
                let _ = write!(line, ", channel {channel}");
            }
            alerts.push(line);
        }
        if let Some(email) = &t.alert.email {
            let mut line = format!(
                "email to {} recipient(s){}, priority {:?}, script log head/tail {}/{} lines, rate limit {} per app and recipient",
                email.recipients.len(),
                if email.app_owner_alert.enable {
                    " and the app owner"
                } else {
                    ""
                },
                email.priority,
                email.head_script_log_lines,
                email.tail_script_log_lines,
                secs(email.rate_limit)
            );
            match &email.html_template_path {
                Some(path) => {
                    let _ = write!(line, ", template {}", path.display());
                }
                None => line.push_str(", built-in template"),
            }
            if email.alert_enable_by_tag.enable {
                let _ = write!(
                    line,
                    ", recipients only for apps tagged \"{}\"",
                    email.alert_enable_by_tag.tag
                );
            }
            alerts.push(line);
        }
        if alerts.is_empty() {
            let _ = writeln!(s, "      alerts: none enabled");
        }
        for alert in alerts {
            let _ = writeln!(s, "      alert: {alert}");
        }
    }

    let b = &config.broker;
    let _ = writeln!(s, "Broker: {}", b.broker_settings().display_url());
    let version = match b.version {
        MqttVersion::V311 => "MQTT 3.1.1".to_owned(),
        MqttVersion::V5 => "MQTT 5".to_owned(),
    };
    let session = if b.clean_session {
        "clean session (events published while stopped are lost)".to_owned()
    } else if b.version == MqttVersion::V5 {
        format!("persistent session, expiry {}", secs(b.session_expiry))
    } else {
        "persistent session (clean session off)".to_owned()
    };
    let _ = writeln!(
        s,
        "  {version}, client id {}, {session}, keep-alive {}",
        b.client_id,
        secs(b.keep_alive)
    );
    let tls = if b.tls {
        match &b.ca_file {
            Some(ca) => format!("TLS, CA file {}", ca.display()),
            None => "TLS, system CA roots".to_owned(),
        }
    } else {
        "plain TCP (no TLS)".to_owned()
    };
    let _ = writeln!(s, "  {tls}");
    if let Some(cert) = &b.client_cert_file {
        let _ = writeln!(s, "  client certificate {}", cert.display());
    }
    match &b.password {
        Some(_) => {
            let _ = writeln!(s, "  password: *** {}", b.password_source);
        }
        None => {
            let _ = writeln!(s, "  password: not set");
        }
    }
    if let Some(smtp) = &config.smtp {
        let security = match smtp.security() {
            SmtpSecurity::ImplicitTls => "TLS (secure: true)",
            SmtpSecurity::StartTlsRequired => "STARTTLS required",
            SmtpSecurity::StartTlsOpportunistic => "STARTTLS when offered",
            SmtpSecurity::Plain => "plain text (ignoreTLS: true)",
        };
        let _ = writeln!(s, "SMTP: {}:{}, {security}", smtp.host, smtp.port);
        if smtp.security() != SmtpSecurity::Plain {
            let mut tls = format!("  certificate name {}", smtp.tls_name());
            if let Some(ca) = &smtp.ca_file {
                let _ = write!(tls, ", CA file {}", ca.display());
            }
            if !smtp.reject_unauthorized {
                tls.push_str(", ANY certificate accepted (rejectUnauthorized: false)");
            }
            let _ = writeln!(s, "{tls}");
        }
        match &smtp.auth {
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
    let _ = writeln!(
        s,
        "Topics: subscribe to {} (app reload topic {})",
        config.topics.subscription_filter(),
        config.topics.app_reload
    );

    let _ = writeln!(s, "Destinations for failed reloads:");
    if config.destinations.log {
        let _ = writeln!(s, "  - log");
    }
    if let Some(dir) = &config.script_log.log_directory {
        let _ = writeln!(s, "  - script log to disk under {}", dir.display());
    }
    for t in &config.tenants {
        if let Some(teams) = &t.alert.teams {
            let _ = writeln!(
                s,
                "  - Teams ({}) → {}",
                t.id,
                teams.common.webhook_url.masked()
            );
        }
        if let Some(slack) = &t.alert.slack {
            let _ = writeln!(
                s,
                "  - Slack ({}) → {}",
                t.id,
                slack.common.webhook_url.masked()
            );
        }
        if t.alert.email.is_some()
            && let Some(smtp) = &config.smtp
        {
            let _ = writeln!(s, "  - email ({}) via {}:{}", t.id, smtp.host, smtp.port);
        }
    }
    for w in &config.destinations.webhooks {
        let headers: Vec<String> = w
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: ***"))
            .collect();
        let _ = writeln!(
            s,
            "  - webhook \"{}\" → {}{}",
            w.name,
            w.url.masked(),
            if headers.is_empty() {
                String::new()
            } else {
                format!(" (headers {})", headers.join(", "))
            }
        );
    }
    if let Some(m) = &config.destinations.mqtt {
        let _ = writeln!(
            s,
            "  - MQTT re-publish to {}{}",
            m.topic,
            if m.retain { " (retained)" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "State: {} (event ids kept {}h); dead letters: {}",
        config.state_dir.display(),
        config.dedupe.retention.as_secs() / 3600,
        config.dead_letter_dir.display()
    );
    let _ = writeln!(
        s,
        "Delivery: {} attempts, backoff {}ms up to {}ms, then parked",
        config.retry.max_attempts,
        config.retry.initial_backoff.as_millis(),
        config.retry.max_backoff.as_millis()
    );
    let e = &config.enrichment;
    if e.enable {
        let _ = writeln!(
            s,
            "Tenant API: timeout {}, {} retries on 429/5xx, Retry-After capped at {}",
            secs(e.request_timeout),
            e.max_retries,
            secs(e.max_retry_after)
        );
    } else {
        let _ = writeln!(s, "Tenant API: off (alerts carry event content only)");
    }
    s
}
