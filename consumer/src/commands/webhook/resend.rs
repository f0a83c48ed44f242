//! `consumer webhook resend-failed`: carries out [`resend_plan`] for each chosen webhook and
//! prints what it did.

use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use consumer::exit;
use consumer::webhooks::{ResendAction, ResendCounts, Webhook, WebhooksApi, resend_plan};

use super::{Failure, Redactor};

/// The webhooks to look at: those given by id, else those sending to `url`, else all.
async fn chosen_webhooks(
    api: &WebhooksApi,
    ids: &[String],
    url: Option<&str>,
) -> Result<Vec<Webhook>, Failure> {
    if ids.is_empty() {
        let all = api.list().await?;
        return Ok(match url {
            Some(url) => all.into_iter().filter(|h| h.targets(url)).collect(),
            None => all,
        });
    }
    let mut out = Vec::new();
    for id in ids {
        match api.get(id).await {
            Ok(hook) => out.push(hook),
            Err(e) => return Err(Failure::about_webhook(api, id, e)),
        }
    }
    Ok(out)
}

pub(super) async fn resend_failed(
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
    let hooks = chosen_webhooks(api, ids, url).await?;
    if hooks.is_empty() {
        eprintln!(
            "no webhook on tenant {} matches{}",
            api.tenant_id(),
            url.map(|u| format!(" --url {u}")).unwrap_or_default()
        );
        return Ok(exit::OK);
    }

    let mut total = ResendCounts::default();
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
        let mut counts = ResendCounts::default();
        let mut resent_events: Vec<String> = Vec::new();
        for action in resend_plan(&deliveries, cutoff, dry_run) {
            counts.found += 1;
            let d = action.delivery();
            let describe = d.summary();
            match action {
                ResendAction::DeliveredLater(_) => {
                    counts.already_delivered += 1;
                    println!("skip    {describe}: delivered successfully later");
                }
                ResendAction::WouldResend(_) => println!("would resend {describe}"),
                ResendAction::Resend(_) => {
                    let event = d.event_id();
                    if event.as_ref().is_some_and(|ev| resent_events.contains(ev)) {
                        counts.already_delivered += 1;
                        println!("skip    {describe}: same event resent just now");
                        continue;
                    }
                    match api.resend(&hook.id, &d.id).await {
                        Ok(()) => {
                            counts.resent += 1;
                            resent_events.extend(event);
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
        total.add(&counts);
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
