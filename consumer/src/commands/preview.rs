//! `consumer preview`: one Qlik event through the real parsing, tenant match, reload check,
//! enrichment and each destination's templates, printing what every destination would receive.
//! Sends nothing and remembers nothing: no state store, no dedupe entry, no rate-limit window,
//! no dead-letter file, no connection to the broker, SMTP server or webhooks. Only the tenant
//! API is read, as enrichment does.

use std::path::Path;

use anyhow::Context as _;

use consumer::alert::Alert;
use consumer::config::ConsumerConfig;
use consumer::delivery::delivery_name;
use consumer::exit;
use consumer::sinks::{self, Purpose, SharedSink};
use consumer::transforms::enrich::Enricher;
use consumer::transforms::reload::{self, Reaction};
use consumer::transforms::{parse, tenant_filter};

use super::load;
use crate::ConfigArgs;

/// The alert the pipeline would build for the event in `path`; `Err`: why there is none (the
/// message to print, exit [`exit::USAGE`]).
async fn alert_for(config: &ConsumerConfig, path: &Path) -> anyhow::Result<Result<Alert, String>> {
    let shown = path.display();
    let payload = match std::fs::read(path) {
        Ok(payload) => payload,
        Err(e) => return Ok(Err(format!("cannot read the event file {shown}: {e}"))),
    };
    let envelope = match parse::parse(&payload) {
        Ok(envelope) => envelope,
        Err(e) => {
            return Ok(Err(format!(
                "{shown} is not a Qlik event (legacy, hybrid or CloudEvents envelope): {e}"
            )));
        }
    };
    let Some(tenant) = tenant_filter::tenant_for(config, &envelope) else {
        let configured: Vec<&str> = config.tenants.iter().map(|t| t.id.as_str()).collect();
        return Ok(Err(format!(
            "event {:?} is from tenant {:?}, which is not configured (configured: {}); \
             `consumer run` would drop it and no destination would get anything",
            envelope.id,
            envelope.tenant_id,
            configured.join(", ")
        )));
    };
    let reload = match reload::react(&envelope) {
        Reaction::Alert(reload) => reload,
        Reaction::ReloadOk(reload) => {
            return Ok(Err(format!(
                "event {:?} ({}) is a reload of app {:?} that did not fail (status {:?}): no \
                 alert, no destination would get anything",
                envelope.id,
                envelope.event_type,
                reload.app_id.as_deref().unwrap_or("?"),
                reload.status
            )));
        }
        Reaction::Other => {
            return Ok(Err(format!(
                "event {:?} is of type {:?}, not a reload: no alert, no destination would get \
                 anything",
                envelope.id, envelope.event_type
            )));
        }
    };
    let enricher = Enricher::new(config).context("tenant API client")?;
    Ok(Ok(enricher
        .build_alert(config, tenant, &envelope, &reload)
        .await))
}

/// What `missing` in the alert's context says (what enrichment could not fetch).
fn missing(alert: &Alert) -> Vec<String> {
    alert
        .context
        .get("missing")
        .and_then(serde_json::Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Prints one sink's preview (each recipient's copy for a sink with recipients); returns the
/// failures as `(name, error)`.
fn preview_sink(sink: &SharedSink, alert: &Alert, only: Option<&str>) -> Vec<(String, String)> {
    let selected = |name: &str| only.is_none_or(|only| name.starts_with(only));
    let mut failures = Vec::new();
    if !sink.accepts(alert) {
        if selected(sink.name()) {
            println!("=== {} ===", sink.name());
            println!(
                "nothing: this alert is not for this destination (another tenant, or the app \
                 lacks the alertEnableByTag tag)\n"
            );
        }
        return failures;
    }
    let copies = match sink.recipients(alert) {
        None => vec![alert.clone()],
        Some(recipients) => {
            if recipients.is_empty() && selected(sink.name()) {
                println!("=== {} ===", sink.name());
                println!(
                    "nothing: nobody to send it to (no recipients, or the app owner is not to \
                     be alerted)\n"
                );
            }
            recipients.iter().map(|r| alert.for_recipient(r)).collect()
        }
    };
    for copy in copies {
        let name = delivery_name(sink.name(), &copy);
        if !selected(&name) {
            continue;
        }
        println!("=== {name} ===");
        match sink.preview(&copy) {
            Ok(preview) => println!("{preview}"),
            Err(e) => {
                println!("FAILED: {e}\n");
                failures.push((name, e.to_string()));
            }
        }
    }
    failures
}

pub async fn run(args: &ConfigArgs, event: &Path, only: Option<&str>) -> anyhow::Result<u8> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    // A tenant given by hostname: its id, as `run` resolves it, so events match as they would.
    let config = match consumer::tenant_id::resolve_all(&config).await {
        Ok(config) => config,
        Err(problems) => {
            for problem in problems {
                eprintln!("{problem}");
            }
            return Ok(consumer::exit::CONFIG_INVALID);
        }
    };
    let destinations = config.destinations_in_order();
    // `slack` picks every Slack destination, `email:<tenant>/<address>` one recipient's copy.
    let wanted =
        |name: &str| only.is_none_or(|only| name.starts_with(only) || only.starts_with(name));
    if let Some(only) = only
        && !destinations.iter().any(|d| wanted(&d.sink_name()))
    {
        let names: Vec<String> = destinations.iter().map(|d| d.sink_name()).collect();
        eprintln!(
            "preview: no destination named {only:?} (configured: {})",
            names.join(", ")
        );
        return Ok(exit::USAGE);
    }
    let alert = match alert_for(&config, event).await? {
        Ok(alert) => alert,
        Err(why) => {
            eprintln!("preview: {why}");
            return Ok(exit::USAGE);
        }
    };
    eprintln!("preview: {}: reload failed, alert built", alert.describe());
    let missing = missing(&alert);
    if !missing.is_empty() {
        eprintln!(
            "preview: the tenant API did not give everything; the alert says what is missing: {}",
            missing.join("; ")
        );
    }
    let context = config.sink_context();
    let client = sinks::http::client().context("building sinks")?;
    let mut failures = Vec::new();
    for destination in destinations {
        let name = destination.sink_name();
        if !wanted(&name) {
            continue;
        }
        match destination.build_for(&context, &client, Purpose::Preview) {
            Ok(sink) => failures.extend(preview_sink(&sink, &alert, only)),
            Err(e) => {
                println!("=== {name} ===\nFAILED: {e}\n");
                failures.push((name, e.to_string()));
            }
        }
    }
    if failures.is_empty() {
        eprintln!("preview: every destination rendered; nothing was sent or stored");
        return Ok(exit::OK);
    }
    for (name, error) in &failures {
        eprintln!("preview: {name}: {error}");
    }
    eprintln!(
        "preview: {} destination(s) did not render; nothing was sent or stored",
        failures.len()
    );
    Ok(exit::FAILURE)
}
