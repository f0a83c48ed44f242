//! `consumer webhook create`: the target URL, the secret and extra headers taken from the
//! environment (never from the command line), and the webhooks created as planned.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use consumer::config::ConsumerConfig;
use consumer::exit;
use consumer::source::session::{SessionState, SessionTarget};
use consumer::webhooks::{self, NewWebhook, Webhook, WebhooksApi};

use super::Failure;
use super::manage::{print_json, print_webhook};

/// https, or http on a loopback host (local tests); no credentials in the URL.
pub(super) fn check_target_url(text: &str) -> Result<Url, Failure> {
    let url =
        Url::parse(text.trim()).map_err(|e| Failure::usage(format!("--url is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Failure::usage(
            "--url must not carry a user name or password",
        ));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(Failure::usage(
            "--url must be https:// (Qlik delivers webhooks over HTTPS only); plain http:// is accepted for loopback hosts only, for tests",
        )),
        other => Err(Failure::usage(format!(
            "--url must be https://, not {other}://"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

pub(super) fn headers_from_env(
    specs: &[String],
) -> Result<BTreeMap<String, SecretString>, Failure> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let Some((name, var)) = spec.split_once('=') else {
            return Err(Failure::usage(format!(
                "--header-env {spec}: expected NAME=VAR (the header value is read from the environment variable VAR)"
            )));
        };
        let (name, var) = (name.trim(), var.trim());
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Failure::usage(format!(
                "--header-env {spec}: `{name}` is not a header name"
            )));
        }
        match std::env::var(var) {
            Ok(value) if !value.is_empty() => {
                out.insert(name.to_owned(), SecretString::from(value));
            }
            _ => {
                return Err(Failure::usage(format!(
                    "--header-env {name}={var}: the environment variable {var} is not set"
                )));
            }
        }
    }
    Ok(out)
}

/// The secret from `$VAR`, else from stdin (echo off on a terminal). Never from an argument.
pub(super) fn read_secret(var: &str) -> Result<SecretString, Failure> {
    let from_env = match std::env::var(var) {
        Ok(value) if !value.is_empty() => Some(value),
        Ok(_) | Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(Failure::usage(format!(
                "the environment variable {var} is not valid UTF-8"
            )));
        }
    };
    let (secret, source) = match from_env {
        Some(value) => (SecretString::from(value), format!("${var}")),
        None => {
            let line = read_secret_line(var)?;
            (SecretString::from(line), "stdin".to_owned())
        }
    };
    webhooks::validate_secret(secret.expose_secret())
        .map_err(|e| Failure::usage(format!("{e} (read from {source})")))?;
    Ok(secret)
}

fn read_secret_line(var: &str) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let terminal = stdin.is_terminal();
    let _echo = if terminal {
        eprint!("Webhook secret (32-64 characters, not shown; or set {var}): ");
        let _ = std::io::stderr().flush();
        EchoOff::new()
    } else {
        None
    };
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if terminal {
        eprintln!();
    }
    read.map_err(|e| Failure::usage(format!("cannot read the webhook secret from stdin: {e}")))?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        return Err(Failure::usage(format!(
            "no webhook secret: set {var} (or name another variable with --secret-env) or pass it on stdin"
        )));
    }
    Ok(line)
}

/// Terminal echo off while the secret is typed (through `stty`; best effort), back on when
/// dropped.
struct EchoOff;

impl EchoOff {
    fn new() -> Option<Self> {
        stty("-echo").then_some(EchoOff)
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        stty("echo");
    }
}

fn stty(arg: &str) -> bool {
    cfg!(unix)
        && std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

pub(super) struct CreateRequest<'a> {
    pub(super) name: &'a str,
    pub(super) description: Option<&'a str>,
    pub(super) url: &'a str,
    pub(super) secret: &'a SecretString,
    pub(super) enabled: bool,
    pub(super) level: &'a str,
    pub(super) headers: &'a BTreeMap<String, SecretString>,
}

pub(super) async fn create(
    api: &WebhooksApi,
    request: &CreateRequest<'_>,
    plans: &[webhooks::Plan],
    force: bool,
    json: bool,
) -> Result<u8, Failure> {
    let existing = match api.list().await {
        Ok(existing) => existing,
        // With --force nothing depends on the list but a warning.
        Err(e) if force => {
            eprintln!("warning: cannot list the tenant's webhooks to look for duplicates: {e}");
            Vec::new()
        }
        Err(e) => {
            let mut failure = Failure::from(e);
            failure.message = format!(
                "cannot list the tenant's webhooks to look for existing ones, so nothing was created: {} (--force creates without looking)",
                failure.message
            );
            return Err(failure);
        }
    };
    let found = webhooks::existing(plans, request.url, &existing);
    let mut kept: Vec<Webhook> = Vec::new();
    let mut to_create: Vec<&webhooks::Plan> = Vec::new();
    if force {
        warn_duplicates(plans, request.url, &existing);
        to_create.extend(plans);
    } else {
        if !found.conflicting.is_empty() {
            return Err(conflict(&found.conflicting, plans));
        }
        for hook in &found.unrelated {
            eprintln!(
                "note: webhook {} \"{}\" also sends {} to this URL (left as it is)",
                hook.id,
                hook.name,
                hook.event_types.join(", ")
            );
        }
        for (plan, matched) in plans.iter().zip(&found.matched) {
            if matched.is_empty() {
                to_create.push(plan);
            }
            for hook in matched {
                report_existing(hook, plan, json);
                kept.push((*hook).clone());
            }
        }
    }
    let mut created: Vec<Webhook> = Vec::new();
    for plan in to_create {
        let hook = NewWebhook {
            name: format!("{}{}", request.name, plan.name_suffix),
            description: request.description.map(str::to_owned),
            url: request.url.to_owned(),
            event_types: plan.event_types.clone(),
            filter: plan.filter.clone(),
            secret: request.secret.clone(),
            enabled: request.enabled,
            level: request.level.to_owned(),
            encrypted_headers: request.headers.clone(),
        };
        match api.create(&hook).await {
            Ok(webhook) => {
                if !json {
                    println!("created webhook {}", webhook.id);
                    print_webhook(&webhook, true);
                }
                created.push(webhook);
            }
            Err(e) => {
                let mut failure = Failure::from(e);
                if !created.is_empty() {
                    let ids: Vec<&str> = created.iter().map(|h| h.id.as_str()).collect();
                    failure.message.push_str(&format!(
                        "\n(already created: {}; run the same command again to create the rest, or delete them with `consumer webhook delete --id …`)",
                        ids.join(", ")
                    ));
                    if json {
                        kept.extend(created);
                        print_json(&kept)?;
                    }
                }
                return Err(failure);
            }
        }
    }
    let created_count = created.len();
    if json {
        kept.extend(created);
        print_json(&kept)?;
    } else {
        eprintln!(
            "{created_count} webhook(s) created, {} already there, on tenant {}{}",
            kept.len(),
            api.tenant_id(),
            if request.enabled || created_count == 0 {
                ""
            } else {
                " (disabled: enable with `consumer webhook enable --id …`)"
            }
        );
    }
    Ok(exit::OK)
}

/// A webhook that already does what one planned webhook would: reported, not created again.
fn report_existing(hook: &Webhook, plan: &webhooks::Plan, json: bool) {
    let state = if hook.enabled {
        "enabled".to_owned()
    } else {
        format!(
            "DISABLED: enable it with `consumer webhook enable --id {}`",
            hook.id
        )
    };
    eprintln!(
        "webhook {} \"{}\" already sends {} to this URL ({state}); not created again",
        hook.id,
        hook.name,
        hook.event_types.join(", ")
    );
    let filter = |f: &Option<String>| f.clone().filter(|f| !f.is_empty());
    if filter(&hook.filter) != filter(&plan.filter) {
        eprintln!(
            "  its filter is {}, this request's {}: delete it and create again to change it",
            filter(&hook.filter).unwrap_or_else(|| "(none)".to_owned()),
            filter(&plan.filter).unwrap_or_else(|| "(none)".to_owned()),
        );
    }
    if !json {
        println!("existing webhook {}", hook.id);
        print_webhook(hook, false);
    }
}

/// Webhooks to the URL that overlap the request in another grouping: nothing is created, since creating beside
/// them would send some events twice or leave an old set-up half replaced.
fn conflict(conflicting: &[&Webhook], plans: &[webhooks::Plan]) -> Failure {
    let wanted: Vec<String> = plans.iter().map(|p| p.event_types.join(" + ")).collect();
    let mut message = String::from("nothing created: ");
    for hook in conflicting {
        message.push_str(&format!(
            "webhook {} \"{}\" ({}) already sends {} to this URL; ",
            hook.id,
            hook.name,
            if hook.enabled { "enabled" } else { "disabled" },
            hook.event_types.join(", "),
        ));
    }
    message.push_str(&format!(
        "this request would create {} webhook(s) for {}. Delete the old one(s) first (consumer webhook delete --id {}), or add --force to create anyway",
        plans.len(),
        wanted.join(" and "),
        conflicting
            .iter()
            .map(|h| h.id.as_str())
            .collect::<Vec<_>>()
            .join(" / --id "),
    ));
    Failure {
        code: exit::REJECTED,
        message,
    }
}

/// With `--force`: two webhooks sending the same event type to the same URL deliver
/// everything twice.
fn warn_duplicates(plans: &[webhooks::Plan], url: &str, existing: &[Webhook]) {
    for plan in plans {
        for hook in existing.iter().filter(|h| h.targets(url)) {
            let shared: Vec<&String> = plan
                .event_types
                .iter()
                .filter(|t| hook.event_types.contains(t))
                .collect();
            if !shared.is_empty() {
                eprintln!(
                    "warning: webhook {} \"{}\" already sends {} to this URL; events will arrive twice (the consumer drops duplicates by event id). Delete one with: consumer webhook delete --id {}",
                    hook.id,
                    hook.name,
                    join(&shared),
                    hook.id
                );
            }
        }
    }
}

/// Says whether the consumer's persistent session exists on the broker: events Qlik sends
/// before it exists are dropped by the broker. Never fails the create.
pub(super) async fn session_note(config: &ConsumerConfig) {
    let target = SessionTarget::from_config(config);
    let client_id = target.client_id();
    match target.status().await {
        Ok(SessionState::Running) => eprintln!(
            "consumer session: the consumer is running and subscribed (client id {client_id})"
        ),
        Ok(SessionState::Present) => eprintln!(
            "consumer session: the broker holds the session of client id {client_id}; events are kept for the consumer"
        ),
        Ok(SessionState::Absent) => eprintln!(
            "warning: the broker holds no session for the consumer's client id {client_id}: events Qlik sends before the consumer first runs will be lost. Run `consumer session create` (or start the consumer once) now"
        ),
        Err(e) => eprintln!(
            "warning: cannot tell whether the consumer's session exists ({e}); check with `consumer session status` before events matter"
        ),
    }
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
