//! `consumer webhook list|delete|enable|disable`, and how webhooks are printed.

use consumer::exit;
use consumer::webhooks::{Webhook, WebhookErrorKind, WebhooksApi};

use super::Failure;

pub(super) fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure {
        code: exit::FAILURE,
        message: format!("cannot write JSON: {e}"),
    })?;
    println!("{text}");
    Ok(())
}

pub(super) fn print_webhook(h: &Webhook, with_secret_note: bool) {
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

pub(super) async fn list(api: &WebhooksApi, json: bool) -> Result<u8, Failure> {
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

pub(super) async fn delete(
    api: &WebhooksApi,
    id: Option<&str>,
    name: Option<&str>,
) -> Result<u8, Failure> {
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

pub(super) async fn set_enabled(api: &WebhooksApi, id: &str, enabled: bool) -> Result<u8, Failure> {
    match api.set_enabled(id, enabled).await {
        Ok(()) => {
            println!(
                "webhook {id} {}",
                if enabled { "enabled" } else { "disabled" }
            );
            Ok(exit::OK)
        }
        Err(e) => Err(Failure::about_webhook(api, id, e)),
    }
}
