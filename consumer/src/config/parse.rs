//! From merged YAML to [`ConsumerConfig`], collecting every problem on the way.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use qlik_events::MqttVersion;
use secrecy::SecretString;
use serde_yaml_ng::Value;

use super::node::{Node, Problems, is_placeholder};
use super::types::*;

/// Key path of Butler's Qlik Cloud section.
pub const QSC: &str = "Butler.qlikSenseCloud";
/// Key path of Butler's single tenant block.
pub const TENANT: &str = "Butler.qlikSenseCloud.event.mqtt.tenant";
/// Key path of the extension list of tenants.
pub const TENANTS: &str = "Butler.qlikSenseCloud.event.mqtt.tenants";
/// Key path of Butler's MQTT forward block (broker and topics).
pub const FORWARD: &str = "Butler.mqttConfig.qlikSenseCloud.event.mqttForward";
/// Key path of the consumer's own extension section.
pub const CONSUMER: &str = "Butler.qlikSenseCloud.consumer";
/// Key path of Butler's script-log-to-disk block for Qlik Cloud.
pub const SCRIPT_LOG: &str = "Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure";

/// Environment variable for one tenant's JWT: `QLIK_TENANT_JWT_` plus the tenant id in upper
/// case with every character other than A–Z and 0–9 replaced by `_`.
pub fn tenant_jwt_env_var(tenant_id: &str) -> String {
    let suffix: String = tenant_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("QLIK_TENANT_JWT_{suffix}")
}

/// JWT for every tenant without its own variable.
pub const TENANT_JWT_ENV: &str = "QLIK_TENANT_JWT";
/// Broker password; wins over `broker.password` in the file.
pub const MQTT_PASSWORD_ENV: &str = "MQTT_PASSWORD";
/// SMTP password; wins over `Butler.emailNotification.smtp.auth.password` in the file.
pub const SMTP_PASSWORD_ENV: &str = "SMTP_PASSWORD";
/// Key path of Butler's SMTP server settings.
pub const SMTP: &str = "Butler.emailNotification.smtp";

pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn env_var(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

pub(crate) fn parse(
    doc: &Value,
    sources: Vec<PathBuf>,
    env: Env<'_>,
) -> Result<ConsumerConfig, Vec<super::Problem>> {
    let mut p = Problems::default();
    let root = Node::root("Butler", doc.as_mapping().and_then(|m| m.get("Butler")));
    if !root.expect_map(&mut p, true) {
        if let Some(problem) = p.0.last_mut() {
            problem.message.push_str(" (is this a Butler config file?)");
        }
        return Err(p.0);
    }

    let qsc = root.child("qlikSenseCloud");
    let mut enabled = false;
    if qsc.expect_map(&mut p, true) {
        match qsc.child("enable").bool_required(&mut p) {
            Some(true) => enabled = true,
            Some(false) => p.add(
                format!("{QSC}.enable"),
                "is false: the consumer only handles Qlik Cloud events; set it to true \
                 (in the extension file, if Butler itself should keep it off)",
            ),
            None => {}
        }
    }

    let tenants = parse_tenants(&qsc, env, &mut p);
    let forward = root.at("mqttConfig.qlikSenseCloud.event.mqttForward");
    let (broker, topics) = parse_forward(&forward, env, &mut p);
    let script_log = parse_script_log(
        &root.at("scriptLog.storeOnDisk.qsCloud.appReloadFailure"),
        &mut p,
    );
    let generic_urls = parse_generic_urls(&root.child("genericUrls"), &mut p);
    let ext = qsc.child("consumer");
    ext.expect_map(&mut p, false);
    let state_dir = ext
        .child("stateDirectory")
        .opt_string(&mut p)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".state"));
    let dead_letter_dir = ext
        .child("deadLetterDirectory")
        .opt_string(&mut p)
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("dead-letter"));
    let dedupe = DedupeConfig {
        retention: Duration::from_secs(
            ext.at("dedupe.retentionHours")
                .u64_or(&mut p, 168, 1, 24 * 365)
                * 3600,
        ),
    };
    let retry = parse_retry(&ext.child("retry"), &mut p);
    let enrichment = parse_enrichment(&ext.child("enrichment"), &mut p);
    let destinations = parse_destinations(&ext.child("destinations"), &mut p);
    let smtp = if email_wanted(&qsc) {
        parse_smtp(&root.child("emailNotification"), env, &mut p)
    } else {
        None
    };

    if !p.0.is_empty() {
        return Err(p.0);
    }
    match (broker, topics) {
        (Some(broker), Some(topics)) if !tenants.is_empty() => Ok(ConsumerConfig {
            enabled,
            tenants,
            broker,
            topics,
            script_log,
            generic_urls,
            state_dir,
            dead_letter_dir,
            dedupe,
            retry,
            enrichment,
            destinations,
            smtp,
            sources,
        }),
        // Every `None` above came with a problem; this arm is only reachable through a bug.
        _ => Err(vec![super::Problem {
            path: "Butler".to_owned(),
            message: "incomplete configuration".to_owned(),
        }]),
    }
}

fn parse_tenants(qsc: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Vec<TenantConfig> {
    let mqtt = qsc.at("event.mqtt");
    let single = mqtt.child("tenant");
    let list = mqtt.child("tenants");
    let mut blocks: Vec<Node<'_>> = Vec::new();
    if single.is_present() {
        blocks.push(single.clone());
    }
    blocks.extend(list.items(p));
    if blocks.is_empty() {
        p.add(
            TENANT,
            "missing: configure Butler's tenant block (or the tenants list extension)",
        );
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut tenants = Vec::new();
    for block in blocks {
        if !block.expect_map(p, true) {
            continue;
        }
        // Checked on the raw id so a duplicate is named even when the block has other problems.
        if let Some(id) = block.child("id").opt_string(&mut Problems::default())
            && !seen.insert(id.clone())
        {
            p.add(
                format!("{}.id", block.path),
                format!("tenant `{id}` is configured more than once"),
            );
            continue;
        }
        if let Some(tenant) = parse_tenant(&block, env, p) {
            tenants.push(tenant);
        }
    }
    tenants
}

fn parse_tenant(t: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Option<TenantConfig> {
    let id = t.child("id").real_string(p);
    let tenant_url = t.child("tenantUrl").url(p, false);
    let auth_type = match t.child("authType").string(p).as_deref() {
        Some(s) if s.eq_ignore_ascii_case("jwt") => Some(AuthType::Jwt),
        Some(other) => {
            p.add(
                format!("{}.authType", t.path),
                format!("must be `jwt` (got `{other}`)"),
            );
            None
        }
        None => None,
    };
    let jwt = id.as_deref().and_then(|id| resolve_jwt(t, id, env, p));
    let qmc_url = t.at("qlikSenseUrls.qmc").link(p);
    let hub_url = t.at("qlikSenseUrls.hub").link(p);
    let comment = t.child("comment").opt_string(p);
    let alert = t.child("alert");
    alert.expect_map(p, false);
    let alert = TenantAlerts {
        teams: parse_teams(&alert.at("teamsNotification.reloadAppFailure"), p),
        slack: parse_slack(&alert.at("slackNotification.reloadAppFailure"), p),
        email: parse_email(&alert.at("emailNotification.reloadAppFailure"), p),
    };
    let (jwt, jwt_source) = jwt?;
    Some(TenantConfig {
        id: id?,
        tenant_url: tenant_url?,
        auth_type: auth_type?,
        jwt,
        jwt_source,
        qmc_url,
        hub_url,
        comment,
        alert,
        key_path: t.path.clone(),
    })
}

/// Per-tenant variable, then the shared one, then the file: the environment wins so a token can
/// stay out of a file that is copied around.
fn resolve_jwt(
    t: &Node<'_>,
    id: &str,
    env: Env<'_>,
    p: &mut Problems,
) -> Option<(SecretString, SecretSource)> {
    let per_tenant = tenant_jwt_env_var(id);
    let (token, source) = if let Some(token) = env_var(env, &per_tenant) {
        (token, SecretSource::Env(per_tenant))
    } else if let Some(token) = env_var(env, TENANT_JWT_ENV) {
        (token, SecretSource::Env(TENANT_JWT_ENV.to_owned()))
    } else {
        let node = t.at("auth.jwt.token");
        let hint = format!("set it here or in ${per_tenant} / ${TENANT_JWT_ENV}");
        match node.opt_string(p) {
            None if node.is_present() => return None,
            None => {
                p.add(&node.path, format!("missing: {hint}"));
                return None;
            }
            Some(s) if is_placeholder(&s) => {
                p.add(
                    &node.path,
                    format!("still holds a template placeholder (<...>): {hint}"),
                );
                return None;
            }
            Some(s) => (s, SecretSource::File(node.path.clone())),
        }
    };
    let token = token.trim().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let looks_like_jwt = parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=')
        });
    if !looks_like_jwt {
        let where_ = match &source {
            SecretSource::Env(var) => format!(" (from ${var})"),
            _ => String::new(),
        };
        p.add(
            format!("{}.auth.jwt.token", t.path),
            format!("is not a JWT{where_}: expected three base64url parts separated by dots"),
        );
        return None;
    }
    Some((SecretString::from(token), source))
}

/// Only an enabled block is validated: Butler lets disabled ones hold any value.
fn block_enabled(node: &Node<'_>, p: &mut Problems) -> bool {
    if !node.is_present() {
        return false;
    }
    if !node.expect_map(p, false) {
        return false;
    }
    node.child("enable").bool_or(p, false)
}

fn parse_tag(node: &Node<'_>, p: &mut Problems) -> AlertEnableByTag {
    let enable = node.child("enable").bool_or(p, false);
    let tag = if enable {
        node.child("tag").string(p).unwrap_or_default()
    } else {
        node.child("tag").opt_string(p).unwrap_or_default()
    };
    AlertEnableByTag { enable, tag }
}

fn rate_limit(node: &Node<'_>, p: &mut Problems) -> Duration {
    Duration::from_secs(node.child("rateLimit").u64_or(p, 300, 0, 7 * 24 * 3600))
}

fn lines(node: &Node<'_>, key: &str, p: &mut Problems) -> usize {
    // Fits in usize on every supported target: bounded to 100000 lines.
    node.child(key).u64_or(p, 10, 0, 100_000) as usize
}

fn parse_chat_common(node: &Node<'_>, p: &mut Problems) -> Option<ChatAlertCommon> {
    let alert_enable_by_tag = parse_tag(&node.child("alertEnableByTag"), p);
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
    // Read before any `?` below, so their problems are reported too.
    let head_script_log_lines = lines(node, "headScriptLogLines", p);
    let tail_script_log_lines = lines(node, "tailScriptLogLines", p);
    let rate_limit = rate_limit(node, p);
    Some(ChatAlertCommon {
        alert_enable_by_tag,
        basic_content_only,
        webhook_url: webhook_url?,
        message_type: message_type?,
        basic_msg_template,
        template_file,
        head_script_log_lines,
        tail_script_log_lines,
        rate_limit,
    })
}

fn parse_teams(node: &Node<'_>, p: &mut Problems) -> Option<TeamsAlert> {
    if !block_enabled(node, p) {
        return None;
    }
    Some(TeamsAlert {
        common: parse_chat_common(node, p)?,
    })
}

fn parse_slack(node: &Node<'_>, p: &mut Problems) -> Option<SlackAlert> {
    if !block_enabled(node, p) {
        return None;
    }
    let channel = node.child("channel").opt_string(p);
    let from_user = node.child("fromUser").opt_string(p);
    let icon_emoji = node.child("iconEmoji").opt_string(p);
    Some(SlackAlert {
        common: parse_chat_common(node, p)?,
        channel,
        from_user,
        icon_emoji,
    })
}

fn emails(node: &Node<'_>, p: &mut Problems) -> Vec<String> {
    node.items(p)
        .into_iter()
        .filter_map(|item| {
            // Butler's owner lists are `- email: x`; recipients are plain strings.
            let item = if matches!(item.value, Some(Value::Mapping(_))) {
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

fn parse_email(node: &Node<'_>, p: &mut Problems) -> Option<EmailAlert> {
    if !block_enabled(node, p) {
        return None;
    }
    let alert_enable_by_tag = parse_tag(&node.child("alertEnableByTag"), p);
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
        && let Err(e) = crate::sinks::template::check(subject)
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
    let rate_limit = rate_limit(node, p);
    let head_script_log_lines = lines(node, "headScriptLogLines", p);
    let tail_script_log_lines = lines(node, "tailScriptLogLines", p);
    let body_file_directory = node
        .child("bodyFileDirectory")
        .opt_string(p)
        .map(PathBuf::from);
    let html_template_file = node.child("htmlTemplateFile").opt_string(p);
    let text_template_file = node.child("textTemplateFile").opt_string(p);
    let dir_key = format!("{}.bodyFileDirectory", node.path);
    let html_template_path = match (&body_file_directory, &html_template_file) {
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
    let text_template_path = match (&body_file_directory, &text_template_file) {
        (_, None) => None,
        (None, Some(_)) => {
            p.add(&dir_key, "missing: needed with textTemplateFile");
            None
        }
        (Some(dir), Some(file)) => {
            template_in(dir, file, &format!("{}.textTemplateFile", node.path), p)
        }
    };
    Some(EmailAlert {
        alert_enable_by_tag,
        app_owner_alert,
        rate_limit,
        head_script_log_lines,
        tail_script_log_lines,
        priority,
        subject: subject?,
        body_file_directory,
        html_template_file,
        html_template_path,
        text_template_path,
        from_address: from_address?,
        recipients,
    })
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
            if let Err(e) = crate::sinks::template::check(&text) {
                p.add(key, format!("`{}`: {e}", path.display()));
            }
        }
        Err(e) => p.add(key, format!("`{}` is unreadable: {e}", path.display())),
    }
    Some(path.clone())
}

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

/// Whether some tenant block (Butler's or one in the list) enables email alerts. Looked up in
/// the raw document, so SMTP problems are reported even when that tenant has others.
fn email_wanted(qsc: &Node<'_>) -> bool {
    let mqtt = qsc.at("event.mqtt");
    let mut ignore = Problems::default();
    let mut blocks = vec![mqtt.child("tenant")];
    blocks.extend(mqtt.child("tenants").items(&mut ignore));
    blocks.iter().any(|t| {
        t.at("alert.emailNotification.reloadAppFailure.enable")
            .bool_or(&mut ignore, false)
    })
}

/// `Butler.emailNotification.smtp` (and Butler's master switch `Butler.emailNotification.enable`,
/// without which Butler sends no email either).
fn parse_smtp(email: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Option<SmtpConfig> {
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
    let ca_file = existing_file(&tls.child("caFile"), p);
    let auth_node = s.child("auth");
    auth_node.expect_map(p, false);
    let auth = if auth_node.child("enable").bool_or(p, false) {
        let user = auth_node.child("user").real_string(p);
        let password = match env_var(env, SMTP_PASSWORD_ENV) {
            Some(pw) => Some((
                SecretString::from(pw),
                SecretSource::Env(SMTP_PASSWORD_ENV.to_owned()),
            )),
            None => {
                let node = auth_node.child("password");
                let hint = format!("set it here or in ${SMTP_PASSWORD_ENV}");
                match node.opt_string(p) {
                    Some(pw) if is_placeholder(&pw) => {
                        p.add(
                            &node.path,
                            format!("still holds a template placeholder (<...>): {hint}"),
                        );
                        None
                    }
                    Some(pw) => Some((
                        SecretString::from(pw),
                        SecretSource::File(node.path.clone()),
                    )),
                    None if node.is_present() => None,
                    None => {
                        p.add(&node.path, format!("missing: {hint}"));
                        None
                    }
                }
            }
        };
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
    let timeout = Duration::from_secs(s.child("timeoutSeconds").u64_or(p, 30, 1, 600));
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

fn existing_file(node: &Node<'_>, p: &mut Problems) -> Option<PathBuf> {
    let path = PathBuf::from(node.opt_string(p)?);
    if !path.is_file() {
        p.add(
            &node.path,
            format!("file `{}` does not exist", path.display()),
        );
    }
    Some(path)
}

fn default_client_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
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

fn parse_forward(
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
    let (password, password_source) = match env_var(env, MQTT_PASSWORD_ENV) {
        Some(pw) => (
            Some(SecretString::from(pw)),
            SecretSource::Env(MQTT_PASSWORD_ENV.to_owned()),
        ),
        None => match b.child("password").opt_string(p) {
            Some(pw) if is_placeholder(&pw) => {
                if username.is_some() {
                    p.add(
                        format!("{}.password", b.path),
                        format!(
                            "still holds a template placeholder (<...>): set it here or in ${MQTT_PASSWORD_ENV}"
                        ),
                    );
                }
                (None, SecretSource::None)
            }
            Some(pw) => (
                Some(SecretString::from(pw)),
                SecretSource::File(format!("{}.password", b.path)),
            ),
            None => (None, SecretSource::None),
        },
    };
    if password.is_some() && username.is_none() && !b.child("username").is_present() {
        p.add(
            format!("{}.username", b.path),
            "missing: a password is set, and MQTT sends a password only with a username",
        );
    }
    let tls = b.child("tls").bool_or(p, true);
    let ca_file = existing_file(&b.child("caFile"), p);
    let client_cert_file = existing_file(&b.child("clientCertFile"), p);
    let client_key_file = existing_file(&b.child("clientKeyFile"), p);
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
    let client_id = match b.child("clientId").opt_string(p) {
        Some(id) if id.contains(['/', '+', '#']) => {
            p.add(
                format!("{}.clientId", b.path),
                "must not contain `/`, `+` or `#`",
            );
            None
        }
        Some(id) => Some(id),
        None => Some(default_client_id()),
    };
    let version = match b.child("mqttVersion").opt_string(p) {
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
    let clean_session = b.child("cleanSession").bool_or(p, false);
    let session_expiry = Duration::from_secs(b.child("sessionExpirySeconds").u64_or(
        p,
        7 * 24 * 3600,
        1,
        u64::from(u32::MAX),
    ));
    let shared_group = match b.child("sharedSubscriptionGroup").opt_string(p) {
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
    let keep_alive = Duration::from_secs(b.child("keepAliveSeconds").u64_or(p, 30, 5, 3600));
    Some(BrokerConfig {
        host: host?,
        port: port?,
        username,
        password,
        password_source,
        tls,
        ca_file,
        client_cert_file,
        client_key_file,
        client_id: client_id?,
        version: version?,
        clean_session,
        session_expiry,
        shared_group,
        keep_alive,
    })
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
fn filter_matches(filter: &str, topic: &str) -> bool {
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

fn parse_script_log(node: &Node<'_>, p: &mut Problems) -> ScriptLogConfig {
    if !block_enabled(node, p) {
        return ScriptLogConfig::default();
    }
    ScriptLogConfig {
        log_directory: node.child("logDirectory").real_string(p).map(PathBuf::from),
    }
}

fn parse_generic_urls(node: &Node<'_>, p: &mut Problems) -> Vec<GenericUrl> {
    node.items(p)
        .into_iter()
        .filter_map(|item| {
            if !item.expect_map(p, true) {
                return None;
            }
            Some(GenericUrl {
                id: item.child("id").opt_string(p).unwrap_or_default(),
                link_text: item.child("linkText").opt_string(p).unwrap_or_default(),
                comment: item.child("comment").opt_string(p).unwrap_or_default(),
                url: item.child("url").link(p).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_retry(node: &Node<'_>, p: &mut Problems) -> RetryConfig {
    node.expect_map(p, false);
    let initial = node.child("initialBackoffMs").u64_or(p, 1000, 1, 3_600_000);
    let max = node.child("maxBackoffMs").u64_or(p, 60_000, 1, 3_600_000);
    if max < initial {
        p.add(
            format!("{}.maxBackoffMs", node.path),
            "must not be smaller than initialBackoffMs",
        );
    }
    RetryConfig {
        max_attempts: u32::try_from(node.child("maxAttempts").u64_or(p, 5, 1, 100)).unwrap_or(5),
        initial_backoff: Duration::from_millis(initial),
        max_backoff: Duration::from_millis(max),
    }
}

fn parse_enrichment(node: &Node<'_>, p: &mut Problems) -> EnrichmentConfig {
    node.expect_map(p, false);
    let d = EnrichmentConfig::default();
    EnrichmentConfig {
        enable: node.child("enable").bool_or(p, d.enable),
        request_timeout: Duration::from_secs(node.child("timeoutSeconds").u64_or(p, 10, 1, 300)),
        max_retries: u32::try_from(node.child("maxRetries").u64_or(p, 3, 0, 10)).unwrap_or(3),
        max_retry_after: Duration::from_secs(
            node.child("maxRetryAfterSeconds").u64_or(p, 30, 0, 600),
        ),
        initial_backoff: Duration::from_millis(
            node.child("initialBackoffMs").u64_or(p, 500, 1, 60_000),
        ),
        max_script_log_bytes: usize::try_from(node.child("maxScriptLogBytes").u64_or(
            p,
            16 * 1024 * 1024,
            1024,
            1024 * 1024 * 1024,
        ))
        .unwrap_or(d.max_script_log_bytes),
    }
}

fn parse_destinations(node: &Node<'_>, p: &mut Problems) -> Destinations {
    node.expect_map(p, false);
    let log = node.at("log.enable").bool_or(p, true);
    let webhooks = node
        .child("webhook")
        .items(p)
        .into_iter()
        .enumerate()
        .filter_map(|(i, w)| {
            if !w.expect_map(p, true) || !w.child("enable").bool_or(p, true) {
                return None;
            }
            let name = w
                .child("name")
                .opt_string(p)
                .unwrap_or_else(|| format!("webhook-{}", i + 1));
            let url = w.child("url").url(p, true);
            let headers = w
                .child("headers")
                .items(p)
                .into_iter()
                .filter_map(|h| {
                    if !h.expect_map(p, true) {
                        return None;
                    }
                    let name = h.child("name").string(p)?;
                    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
                        p.add(
                            format!("{}.name", h.path),
                            format!("`{name}` is not a valid HTTP header name"),
                        );
                        return None;
                    }
                    // The value is a secret: never quote it.
                    let value = h.child("value").string(p)?;
                    Some((name, SecretString::from(value)))
                })
                .collect();
            let timeout = Duration::from_secs(w.child("timeoutSeconds").u64_or(p, 10, 1, 300));
            let rate_limit =
                Duration::from_secs(w.child("rateLimit").u64_or(p, 0, 0, 7 * 24 * 3600));
            Some(WebhookDestination {
                name,
                url: SecretUrl::new(url?),
                headers,
                timeout,
                rate_limit,
            })
        })
        .collect();
    let m = node.child("mqtt");
    let mqtt = if block_enabled(&m, p) {
        let topic = m
            .child("topic")
            .opt_string(p)
            .unwrap_or_else(|| "qscloud-alerts/{tenantId}/{appId}".to_owned());
        if topic.contains(['+', '#', '\0']) || topic.starts_with('$') {
            p.add(
                format!("{}.topic", m.path),
                "must be a topic (no `+`, `#`, leading `$`)",
            );
        }
        Some(MqttDestination {
            topic,
            retain: m.child("retain").bool_or(p, false),
            rate_limit: Duration::from_secs(m.child("rateLimit").u64_or(p, 0, 0, 7 * 24 * 3600)),
        })
    } else {
        None
    };
    Destinations {
        log,
        webhooks,
        mqtt,
    }
}
