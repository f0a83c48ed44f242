//! `consumer webhook create`: the target URL, the secret and extra headers taken from the
//! environment (never from the command line), and the webhooks created as planned.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use consumer::exit;
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
    json: bool,
) -> Result<u8, Failure> {
    // Two webhooks sending the same event type to the same URL deliver everything twice.
    if let Ok(existing) = api.list().await {
        for plan in plans {
            for hook in existing.iter().filter(|h| h.targets(request.url)) {
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
    let mut created: Vec<Webhook> = Vec::new();
    for plan in plans {
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
                        "\n(already created: {}; delete with `consumer webhook delete --id …` before retrying, or keep it)",
                        ids.join(", ")
                    ));
                    if json {
                        print_json(&created)?;
                    }
                }
                return Err(failure);
            }
        }
    }
    if json {
        print_json(&created)?;
    } else {
        eprintln!(
            "{} webhook(s) created on tenant {}{}",
            created.len(),
            api.tenant_id(),
            if request.enabled {
                ""
            } else {
                " (disabled: enable with `consumer webhook enable --id …`)"
            }
        );
    }
    Ok(exit::OK)
}

fn join(items: &[&String]) -> String {
    items
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
