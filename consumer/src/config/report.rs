//! `check-config`'s summary of a configuration, secrets masked.

use std::fmt::Write as _;

use super::consumer::ConsumerConfig;

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
    for tenant in &config.tenants {
        tenant.summary(&mut s);
    }
    config.broker.summary(&mut s);
    if let Some(smtp) = &config.smtp {
        smtp.summary(&mut s);
    }
    let _ = writeln!(
        s,
        "Topics: subscribe to {} (app reload topic {})",
        config.topics.subscription_filter(),
        config.topics.app_reload
    );
    let _ = writeln!(s, "Destinations for failed reloads:");
    let context = config.sink_context();
    for destination in config.destinations_in_order() {
        if let Some(line) = destination.summary(&context) {
            let _ = writeln!(s, "  - {line}");
        }
    }
    settings_summary(&mut s, config);
    s
}

/// The closing lines of the `check-config` summary: state, delivery, tenant API.
/// The consumer section's values, every key as declared once in [`crate::settings`] (so a
/// new key shows here without a line of its own), then what those keys mean together.
fn settings_summary(s: &mut String, config: &ConsumerConfig) {
    let c = &config.consumer;
    let _ = writeln!(
        s,
        "State: {}; dead letters: {}; store: {}; metrics: {}",
        c.state_dir.display(),
        c.dead_letter_dir.display(),
        match &c.ha.state_store {
            crate::settings::StateStoreConfig::File => "files in the state directory".to_owned(),
            crate::settings::StateStoreConfig::Redis(url) =>
                format!("{url} (claim lease {}s)", c.ha.claim_lease.as_secs()),
        },
        c.ha.metrics_listen
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"))
    );
    let _ = writeln!(s, "Consumer settings ({}):", crate::settings::CONSUMER);
    for line in c.summary_lines() {
        let _ = writeln!(s, "  {line}");
    }
    let watched: Vec<String> = config
        .tenants
        .iter()
        .filter_map(|t| {
            config
                .relay_url_of(t)
                .map(|url| format!("{} → {}", t.id, url.as_str().trim_end_matches('/')))
        })
        .collect();
    let _ = writeln!(
        s,
        "Webhook watchdog: {}",
        if watched.is_empty() {
            "off (no watchdog.relayUrl)".to_owned()
        } else {
            watched.join(", ")
        }
    );
}
