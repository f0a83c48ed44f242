//! `consumer webhook create|list|delete|enable|disable|resend-failed`: registering the relay's
//! webhooks in Qlik Cloud and recovering after an outage. Part of the binary (declared in
//! `commands/mod.rs`); the API calls and the planning live in [`consumer::webhooks`].

mod args;
mod create;
mod manage;
mod resend;
mod status;

use secrecy::{ExposeSecret, SecretString};

use consumer::config::TenantConfig;
use consumer::exit;
use consumer::webhooks::{self, FilterChoice, WebhookError, WebhookErrorKind, WebhooksApi};

pub use args::{AFTER_HELP, WebhookCommand};
use args::{Level, Target};

use super::load;

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

    /// A failed call about webhook `id`; a 404 says which webhook the tenant does not have.
    fn about_webhook(api: &WebhooksApi, id: &str, e: WebhookError) -> Self {
        if e.kind() == WebhookErrorKind::NotFound {
            Self {
                code: exit::NOT_FOUND,
                message: format!("no webhook {id} on tenant {}: {e}", api.tenant_id()),
            }
        } else {
            e.into()
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
    if let WebhookCommand::Status {
        config,
        tenant,
        json,
    } = command
    {
        return match load(config) {
            Ok(config) => status::status(&config, tenant.as_deref(), *json).await,
            Err(code) => code,
        };
    }
    let mut redactor = Redactor::default();
    match dispatch(command, &mut redactor).await {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", redactor.clean(&failure.message));
            failure.code
        }
    }
}

fn target_of(command: &WebhookCommand) -> Option<&Target> {
    Some(match command {
        WebhookCommand::Create { target, .. }
        | WebhookCommand::List { target, .. }
        | WebhookCommand::Delete { target, .. }
        | WebhookCommand::Enable { target, .. }
        | WebhookCommand::Disable { target, .. }
        | WebhookCommand::ResendFailed { target, .. } => target,
        // Answered by `run` from the state store, without a tenant API client.
        WebhookCommand::Status { .. } => return None,
    })
}

async fn dispatch(command: &WebhookCommand, redactor: &mut Redactor) -> Result<u8, Failure> {
    let Some(target) = target_of(command) else {
        return Ok(exit::USAGE);
    };
    let config = match load(&target.config) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    let tenant = choose_tenant(&config.tenants, target.tenant.as_deref())?;
    redactor.add(&tenant.jwt);
    let api = WebhooksApi::new(tenant, &config.consumer.enrichment)?;
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
            force,
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
            let url = create::check_target_url(url)?;
            let headers = create::headers_from_env(header_env)?;
            for value in headers.values() {
                redactor.add(value);
            }
            let secret = create::read_secret(secret_env)?;
            redactor.add(&secret);
            let request = create::CreateRequest {
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
            create::session_note(&config).await;
            create::create(&api, &request, &plans, *force, *json).await
        }
        WebhookCommand::List { json, .. } => manage::list(&api, *json).await,
        WebhookCommand::Delete { id, name, .. } => {
            manage::delete(&api, id.as_deref(), name.as_deref()).await
        }
        WebhookCommand::Status { .. } => Ok(exit::USAGE),
        WebhookCommand::Enable { id, .. } => manage::set_enabled(&api, id, true).await,
        WebhookCommand::Disable { id, .. } => manage::set_enabled(&api, id, false).await,
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
            resend::resend_failed(&api, since, id, url.as_deref(), *dry_run, redactor).await
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
