//! `consumer webhook create|list|delete|enable|disable|resend-failed`: registering the relay's
//! webhooks in Qlik Cloud and recovering after an outage. Part of the binary (declared in
//! `main.rs`); the API calls live in [`consumer::webhooks`].

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use consumer::config::TenantConfig;
use consumer::webhooks::{
    self, FilterChoice, NewWebhook, Webhook, WebhookError, WebhookErrorKind, WebhooksApi,
};
use qlik_events::{APP_RELOAD_FINISHED, RELOAD_FINISHED};

use super::{ConfigArgs, exit, load};

pub const AFTER_HELP: &str = "\
Exit codes:
  0   success
  1   runtime failure (tenant unreachable, timeouts, HTTP 5xx after retries, unexpected answer)
  2   command-line usage error (also: no or invalid secret, several tenants and no --tenant,
      --since beyond 7d)
  65  Qlik refused the request as invalid (HTTP 400/409/422; Qlik's title and detail are printed)
  66  not found: no webhook with that id or name (HTTP 404)
  75  resend-failed: some resends failed (run it again later)
  77  the tenant did not accept the JWT (401) or its user lacks the rights (403: tenant-level
      webhooks need the TenantAdmin role)
  78  configuration invalid (every problem is printed with its key path)

The tenant URL and JWT come from the configuration (auth.jwt.token, or QLIK_TENANT_JWT /
QLIK_TENANT_JWT_<TENANTID>). The JWT and the webhook secret are never printed.";

#[derive(Args, Clone)]
pub struct Target {
    #[command(flatten)]
    config: ConfigArgs,
    /// Tenant id from the configuration; needed when several tenants are configured.
    #[arg(long, value_name = "ID")]
    tenant: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Level {
    /// Events of every app of the tenant (needs the TenantAdmin role).
    Tenant,
    /// Only events of what the JWT's user can access.
    User,
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Create the webhooks that send reload events to the relay. By default two: one for
    /// com.qlik.v1.app.reload.finished with the filter data.status eq "error" (Qlik accepts
    /// that filter only when it is the webhook's one event type) and one for
    /// com.qlik.v1.reload.finished without a filter (the consumer keeps the failures).
    #[command(after_help = AFTER_HELP)]
    Create {
        #[command(flatten)]
        target: Target,
        /// Webhook name; when two webhooks are created, " (app reload failed)" and
        /// " (reload finished)" are appended.
        #[arg(long)]
        name: String,
        /// The relay's URL (e.g. the Function URL output by `sam deploy`). https; http only
        /// for loopback hosts.
        #[arg(long, value_name = "URL")]
        url: String,
        /// Event type to send; repeat for several.
        #[arg(long = "event-type", value_name = "TYPE",
              default_values_t = [APP_RELOAD_FINISHED.to_owned(), RELOAD_FINISHED.to_owned()])]
        event_types: Vec<String>,
        /// A filter of your own (Qlik's SCIM syntax) on one webhook with every event type,
        /// instead of the default split.
        #[arg(long, value_name = "EXPR", conflicts_with = "no_filter")]
        filter: Option<String>,
        /// No filter: one webhook with every event type, successes included.
        #[arg(long)]
        no_filter: bool,
        /// Environment variable holding the webhook secret (32–64 characters, the one the
        /// relay verifies). When it is unset, the secret is read from stdin (not echoed on a
        /// terminal). Never taken from the command line.
        #[arg(long, value_name = "VAR", default_value = "WEBHOOK_SECRET")]
        secret_env: String,
        /// Description shown in Qlik's Webhooks page.
        #[arg(long)]
        description: Option<String>,
        /// Webhook level.
        #[arg(long, value_enum, default_value_t = Level::Tenant)]
        level: Level,
        /// Extra header Qlik sends with every delivery, stored encrypted by Qlik, its value
        /// read from an environment variable: NAME=VAR (e.g. X-Relay-Token=RELAY_TOKEN).
        #[arg(long = "header-env", value_name = "NAME=VAR")]
        header_env: Vec<String>,
        /// Create the webhooks disabled.
        #[arg(long)]
        disabled: bool,
        /// Print the created webhooks as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's webhooks: id, name, URL, event types, filter, enabled state, why Qlik
    /// disabled one (disabledReason and its code), last update.
    #[command(after_help = AFTER_HELP)]
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON (an array; secrets and header values are never included).
        #[arg(long)]
        json: bool,
    },
    /// Delete a webhook by id or by exact name. Exit 66 when there is none.
    #[command(after_help = AFTER_HELP, group(ArgGroup::new("which").required(true).args(["id", "name"])))]
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Exact name; refused when several webhooks have it.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Enable a webhook (e.g. after Qlik disabled it for failing). Exit 66 when there is none.
    #[command(after_help = AFTER_HELP)]
    Enable {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Disable a webhook. Exit 66 when there is none.
    #[command(after_help = AFTER_HELP)]
    Disable {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Resend the failed deliveries of the last DURATION: the recovery after a broker or relay
    /// outage. Failed deliveries whose event was delivered successfully later (when Qlik
    /// records the event in the delivery) are skipped. Exit 75 when some resends failed.
    #[command(name = "resend-failed", after_help = AFTER_HELP,
              group(ArgGroup::new("scope").required(true).args(["id", "url", "all"])))]
    ResendFailed {
        #[command(flatten)]
        target: Target,
        /// How far back: e.g. 30m, 2h, 3d, 1d12h; at most 7d (Qlik keeps deliveries 7 days).
        #[arg(long, value_name = "DURATION")]
        since: String,
        /// Only this webhook; repeat for several.
        #[arg(long, value_name = "ID")]
        id: Vec<String>,
        /// Only the webhooks sending to this URL (the relay's).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Every webhook of the tenant (including ones that do not send to the relay).
        #[arg(long)]
        all: bool,
        /// Only show what would be resent.
        #[arg(long)]
        dry_run: bool,
    },
}

/// A failure with its exit code; the message is printed on stderr.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Self {
        Self {
            code: exit::USAGE,
            message: message.into(),
        }
    }
}

impl From<WebhookError> for Failure {
    fn from(e: WebhookError) -> Self {
        Self {
            code: code_for(&e),
            message: e.to_string(),
        }
    }
}

fn code_for(e: &WebhookError) -> u8 {
    match e.kind() {
        WebhookErrorKind::NotFound => exit::NOT_FOUND,
        WebhookErrorKind::Unauthorized | WebhookErrorKind::Forbidden => exit::NO_PERMISSION,
        WebhookErrorKind::Rejected => exit::REJECTED,
        WebhookErrorKind::Other => exit::FAILURE,
    }
}

/// Values that must never appear in output, replaced by `***` in every message printed.
#[derive(Default)]
struct Redactor(Vec<SecretString>);

impl Redactor {
    fn add(&mut self, secret: &SecretString) {
        if secret.expose_secret().len() >= 4 {
            self.0.push(secret.clone());
        }
    }

    fn clean(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in &self.0 {
            out = out.replace(s.expose_secret(), "***");
        }
        out
    }
}

/// Runs a webhook command; returns the exit code.
pub async fn run(command: &WebhookCommand) -> u8 {
    let mut redactor = Redactor::default();
    match dispatch(command, &mut redactor).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", redactor.clean(&failure.message));
            failure.code
        }
    }
}

fn target_of(command: &WebhookCommand) -> &Target {
    match command {
        WebhookCommand::Create { target, .. }
        | WebhookCommand::List { target, .. }
        | WebhookCommand::Delete { target, .. }
        | WebhookCommand::Enable { target, .. }
        | WebhookCommand::Disable { target, .. }
        | WebhookCommand::ResendFailed { target, .. } => target,
    }
}

async fn dispatch(command: &WebhookCommand, redactor: &mut Redactor) -> Result<u8, Failure> {
    let target = target_of(command);
    let config = match load(&target.config) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let tenant = choose_tenant(&config.tenants, target.tenant.as_deref())?;
    redactor.add(&tenant.jwt);
    let api = WebhooksApi::new(tenant, &config.enrichment)?;
    match command {
        WebhookCommand::Create {
            name,
            url,
            event_types,
            filter,
            no_filter,
            secret_env,
            description,
            level,
            header_env,
            disabled,
            json,
            ..
        } => {
            let filter = match (filter, no_filter) {
                (Some(expr), _) => FilterChoice::Custom(expr.clone()),
                (None, true) => FilterChoice::None,
                (None, false) => FilterChoice::Default,
            };
            let plans =
                webhooks::plan(event_types, &filter).map_err(|e| Failure::usage(e.to_string()))?;
            let url = check_target_url(url)?;
            let headers = headers_from_env(header_env)?;
            for value in headers.values() {
                redactor.add(value);
            }
            let secret = read_secret(secret_env)?;
            redactor.add(&secret);
            let request = CreateRequest {
                name,
                description: description.as_deref(),
                url: url.as_str(),
                secret: &secret,
                enabled: !disabled,
                level: match level {
                    Level::Tenant => "tenant",
                    Level::User => "user",
                },
                headers: &headers,
            };
            create(&api, &request, &plans, *json).await
        }
        WebhookCommand::List { json, .. } => list(&api, *json).await,
        WebhookCommand::Delete { id, name, .. } => {
            delete(&api, id.as_deref(), name.as_deref()).await
        }
        WebhookCommand::Enable { id, .. } => set_enabled(&api, id, true).await,
        WebhookCommand::Disable { id, .. } => set_enabled(&api, id, false).await,
        WebhookCommand::ResendFailed {
            since,
            id,
            url,
            all: _,
            dry_run,
            ..
        } => {
            let since =
                webhooks::parse_since(since).map_err(|e| Failure::usage(format!("--since {e}")))?;
            resend_failed(&api, since, id, url.as_deref(), *dry_run, redactor).await
        }
    }
}

fn choose_tenant<'a>(
    tenants: &'a [TenantConfig],
    wanted: Option<&str>,
) -> Result<&'a TenantConfig, Failure> {
    let ids = || {
        tenants
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(id) => tenants.iter().find(|t| t.id == id).ok_or_else(|| {
            Failure::usage(format!(
                "tenant {id} is not in the configuration (configured: {})",
                ids()
            ))
        }),
        None => match tenants {
            [only] => Ok(only),
            _ => Err(Failure::usage(format!(
                "several tenants are configured: choose one with --tenant ({})",
                ids()
            ))),
        },
    }
}

/// https, or http on a loopback host (local tests); no credentials in the URL.
fn check_target_url(text: &str) -> Result<Url, Failure> {
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

fn headers_from_env(specs: &[String]) -> Result<BTreeMap<String, SecretString>, Failure> {
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
fn read_secret(var: &str) -> Result<SecretString, Failure> {
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

struct CreateRequest<'a> {
    name: &'a str,
    description: Option<&'a str>,
    url: &'a str,
    secret: &'a SecretString,
    enabled: bool,
    level: &'a str,
    headers: &'a BTreeMap<String, SecretString>,
}

async fn create(
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

fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure {
        code: exit::FAILURE,
        message: format!("cannot write JSON: {e}"),
    })?;
    println!("{text}");
    Ok(())
}

fn print_webhook(h: &Webhook, with_secret_note: bool) {
    println!("  name:         {}", h.name);
    println!("  url:          {}", h.url);
    println!("  event types:  {}", h.event_types.join(", "));
    println!(
        "  filter:       {}",
        h.filter
            .as_deref()
            .filter(|f| !f.is_empty())
            .unwrap_or("(none)")
    );
    if let Some(level) = &h.level {
        println!("  level:        {level}");
    }
    let state = if h.enabled {
        "yes".to_owned()
    } else {
        match (&h.disabled_reason, &h.disabled_reason_code) {
            (Some(reason), Some(code)) => format!("no, disabled: {reason} (code {code})"),
            (Some(reason), None) => format!("no, disabled: {reason}"),
            (None, Some(code)) => format!("no, disabled (code {code})"),
            (None, None) => "no".to_owned(),
        }
    };
    println!("  enabled:      {state}");
    let headers: Vec<&str> = h
        .header_names
        .iter()
        .chain(&h.encrypted_headers)
        .map(String::as_str)
        .collect();
    if !headers.is_empty() {
        println!("  headers:      {} (values not shown)", headers.join(", "));
    }
    if with_secret_note {
        println!("  secret:       set (not shown)");
    }
    if let Some(description) = h.description.as_deref().filter(|d| !d.is_empty()) {
        println!("  description:  {description}");
    }
    println!(
        "  updated:      {}",
        h.updated_at.as_deref().unwrap_or("(unknown)")
    );
}

async fn list(api: &WebhooksApi, json: bool) -> Result<u8, Failure> {
    let hooks = api.list().await?;
    if json {
        print_json(&hooks)?;
    } else {
        for h in &hooks {
            println!("{}", h.id);
            print_webhook(h, false);
        }
        let disabled = hooks.iter().filter(|h| !h.enabled).count();
        eprintln!(
            "{} webhook(s) on tenant {}, {disabled} disabled",
            hooks.len(),
            api.tenant_id()
        );
    }
    Ok(exit::OK)
}

async fn delete(api: &WebhooksApi, id: Option<&str>, name: Option<&str>) -> Result<u8, Failure> {
    let (id, label) = match (id, name) {
        (Some(id), _) => (id.to_owned(), id.to_owned()),
        (None, Some(name)) => {
            let hooks = api.list().await?;
            let matching: Vec<&Webhook> = hooks.iter().filter(|h| h.name == name).collect();
            match matching.as_slice() {
                [] => {
                    return Err(Failure {
                        code: exit::NOT_FOUND,
                        message: format!(
                            "no webhook named \"{name}\" on tenant {}",
                            api.tenant_id()
                        ),
                    });
                }
                [one] => (one.id.clone(), format!("{} \"{name}\"", one.id)),
                several => {
                    let ids: Vec<&str> = several.iter().map(|h| h.id.as_str()).collect();
                    return Err(Failure::usage(format!(
                        "{} webhooks are named \"{name}\" ({}): delete them one at a time with --id",
                        several.len(),
                        ids.join(", ")
                    )));
                }
            }
        }
        (None, None) => return Err(Failure::usage("give --id or --name")),
    };
    match api.delete(&id).await {
        Ok(()) => {
            println!("deleted webhook {label}");
            Ok(exit::OK)
        }
        Err(e) if e.kind() == WebhookErrorKind::NotFound => Err(Failure {
            code: exit::NOT_FOUND,
            message: format!(
                "no webhook {label} on tenant {} (already deleted?): {e}",
                api.tenant_id()
            ),
        }),
        Err(e) => Err(e.into()),
    }
}

async fn set_enabled(api: &WebhooksApi, id: &str, enabled: bool) -> Result<u8, Failure> {
    match api.set_enabled(id, enabled).await {
        Ok(()) => {
            println!(
                "webhook {id} {}",
                if enabled { "enabled" } else { "disabled" }
            );
            Ok(exit::OK)
        }
        Err(e) if e.kind() == WebhookErrorKind::NotFound => Err(Failure {
            code: exit::NOT_FOUND,
            message: format!("no webhook {id} on tenant {}: {e}", api.tenant_id()),
        }),
        Err(e) => Err(e.into()),
    }
}

#[derive(Default)]
struct Counts {
    found: usize,
    already_delivered: usize,
    resent: usize,
    failed: usize,
}

async fn resend_failed(
    api: &WebhooksApi,
    since: Duration,
    ids: &[String],
    url: Option<&str>,
    dry_run: bool,
    redactor: &Redactor,
) -> Result<u8, Failure> {
    let now = OffsetDateTime::now_utc();
    let cutoff = now - since;
    let cutoff_text = cutoff
        .format(&Rfc3339)
        .unwrap_or_else(|_| cutoff.to_string());
    let hooks: Vec<Webhook> = if ids.is_empty() {
        let all = api.list().await?;
        match url {
            Some(url) => all.into_iter().filter(|h| h.targets(url)).collect(),
            None => all,
        }
    } else {
        let mut out = Vec::new();
        for id in ids {
            match api.get(id).await {
                Ok(hook) => out.push(hook),
                Err(e) if e.kind() == WebhookErrorKind::NotFound => {
                    return Err(Failure {
                        code: exit::NOT_FOUND,
                        message: format!("no webhook {id} on tenant {}: {e}", api.tenant_id()),
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        out
    };
    if hooks.is_empty() {
        eprintln!(
            "no webhook on tenant {} matches{}",
            api.tenant_id(),
            url.map(|u| format!(" --url {u}")).unwrap_or_default()
        );
        return Ok(exit::OK);
    }

    let mut total = Counts::default();
    let mut listing_error: Option<u8> = None;
    for hook in &hooks {
        if !hook.enabled {
            eprintln!(
                "warning: webhook {} \"{}\" is disabled{}: Qlik may not deliver resends until it is enabled again (consumer webhook enable --id {})",
                hook.id,
                hook.name,
                hook.disabled_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                hook.id
            );
        }
        let deliveries = match api.deliveries_since(&hook.id, cutoff).await {
            Ok(d) => d,
            Err(e) => {
                let failure = Failure::from(e);
                if failure.code == exit::NO_PERMISSION {
                    return Err(failure);
                }
                eprintln!("error: {}", redactor.clean(&failure.message));
                listing_error.get_or_insert(failure.code);
                continue;
            }
        };
        // An event delivered successfully after it failed needs no resend (Qlik's own retry,
        // or an earlier run of this command), when the deliveries carry the event.
        let mut delivered_at: HashMap<String, OffsetDateTime> = HashMap::new();
        for d in deliveries.iter().filter(|d| d.succeeded()) {
            if let (Some(event), Some(at)) = (d.event_id(), d.triggered()) {
                let entry = delivered_at.entry(event).or_insert(at);
                if at > *entry {
                    *entry = at;
                }
            }
        }
        let mut failed: Vec<&webhooks::WebhookDelivery> =
            deliveries.iter().filter(|d| d.failed()).collect();
        // Oldest first, so events are resent in the order they happened.
        failed.sort_by_key(|d| d.triggered());
        let mut counts = Counts::default();
        let mut resent_events: Vec<String> = Vec::new();
        for d in failed {
            counts.found += 1;
            let event = d.event_id();
            let later_success = match (&event, d.triggered()) {
                (Some(ev), Some(at)) => delivered_at.get(ev).is_some_and(|ok| *ok >= at),
                _ => false,
            };
            let describe = format!(
                "{} {} {}{}{}",
                d.id,
                d.triggered_at,
                d.event_type,
                d.response_status()
                    .map(|s| format!(" (answered HTTP {s})"))
                    .unwrap_or_default(),
                event
                    .as_deref()
                    .map(|e| format!(" event {e}"))
                    .unwrap_or_default()
            );
            if later_success {
                counts.already_delivered += 1;
                println!("skip    {describe}: delivered successfully later");
                continue;
            }
            if event.as_ref().is_some_and(|ev| resent_events.contains(ev)) {
                counts.already_delivered += 1;
                println!("skip    {describe}: same event resent just now");
                continue;
            }
            if dry_run {
                println!("would resend {describe}");
                continue;
            }
            match api.resend(&hook.id, &d.id).await {
                Ok(()) => {
                    counts.resent += 1;
                    if let Some(ev) = event {
                        resent_events.push(ev);
                    }
                    println!("resent  {describe}");
                }
                Err(e) => {
                    let failure = Failure::from(e);
                    if failure.code == exit::NO_PERMISSION {
                        return Err(failure);
                    }
                    counts.failed += 1;
                    println!("FAILED  {describe}: {}", redactor.clean(&failure.message));
                }
            }
        }
        eprintln!(
            "webhook {} \"{}\": {} failed deliveries since {cutoff_text}, {} delivered later, {} {}, {} failed to resend",
            hook.id,
            hook.name,
            counts.found,
            counts.already_delivered,
            if dry_run { "to resend" } else { "resent" },
            if dry_run {
                counts.found - counts.already_delivered
            } else {
                counts.resent
            },
            counts.failed
        );
        total.found += counts.found;
        total.already_delivered += counts.already_delivered;
        total.resent += counts.resent;
        total.failed += counts.failed;
    }
    eprintln!(
        "resend-failed{}: {} webhook(s), found {} failed deliveries since {cutoff_text}, {} delivered later, resent {}, failed {}",
        if dry_run { " (dry run)" } else { "" },
        hooks.len(),
        total.found,
        total.already_delivered,
        total.resent,
        total.failed
    );
    if let Some(code) = listing_error {
        return Ok(code);
    }
    Ok(if total.failed > 0 {
        exit::TRY_AGAIN_LATER
    } else {
        exit::OK
    })
}
