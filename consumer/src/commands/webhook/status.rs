//! `consumer webhook status`: what the webhook watchdog's last check found, read from the
//! state store (files in the state directory, or Redis), so it runs beside a consumer.

use std::time::Duration;

use consumer::config::{ConsumerConfig, StateStoreConfig};
use consumer::exit;
use consumer::state::{LocalStore, RedisStore, StateBackend};
use consumer::watchdog::{CheckOutcome, TenantReport, report_key};

/// A store that does not answer within this long fails the command (monitoring scripts must
/// not hang).
const STORE_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn status(config: &ConsumerConfig, tenant: Option<&str>, json: bool) -> u8 {
    let watched: Vec<&str> = config
        .tenants
        .iter()
        .filter(|t| config.relay_url_of(t).is_some())
        .map(|t| t.id.as_str())
        .filter(|id| tenant.is_none_or(|wanted| wanted == *id))
        .collect();
    if watched.is_empty() {
        eprintln!(
            "error: {}",
            match tenant {
                Some(id) => format!(
                    "tenant {id} is not watched: it is not configured, or has no relay URL \
                     (watchdog.relayUrl)"
                ),
                None => "the webhook watchdog is off: set \
                         Butler.qlikSenseCloud.consumer.watchdog.relayUrl (or a tenant's \
                         watchdog.relayUrl)"
                    .to_owned(),
            }
        );
        return exit::USAGE;
    }
    let mut reports: Vec<(&str, Option<TenantReport>)> = Vec::new();
    for id in watched {
        match read(config, &report_key(id)).await {
            Ok(note) => reports.push((id, note.and_then(|n| serde_json::from_str(&n).ok()))),
            Err(e) => {
                eprintln!("error: {e}");
                return exit::FAILURE;
            }
        }
    }
    if json {
        let found: Vec<&TenantReport> = reports.iter().filter_map(|(_, r)| r.as_ref()).collect();
        match serde_json::to_string_pretty(&found) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        for (id, report) in &reports {
            match report {
                Some(report) => print!("{}", report.render()),
                None => println!(
                    "tenant {id}: no watchdog check recorded yet (is a consumer running with \
                     this configuration? It checks every {}s)",
                    config.consumer.watchdog.interval.as_secs()
                ),
            }
        }
    }
    let unhealthy = reports
        .iter()
        .filter_map(|(_, r)| r.as_ref())
        .any(|r| !r.healthy() && r.outcome != CheckOutcome::Error);
    let unknown = reports
        .iter()
        .any(|(_, r)| r.as_ref().is_none_or(|r| r.outcome == CheckOutcome::Error));
    if unhealthy {
        exit::FAILURE
    } else if unknown {
        exit::TRY_AGAIN_LATER
    } else {
        exit::OK
    }
}

async fn read(config: &ConsumerConfig, key: &str) -> Result<Option<String>, String> {
    match &config.consumer.ha.state_store {
        StateStoreConfig::File => Ok(LocalStore::read_note(&config.consumer.state_dir, key)),
        StateStoreConfig::Redis(url) => {
            let store = RedisStore::open(url).map_err(|e| format!("state store {}: {e}", url))?;
            tokio::time::timeout(STORE_TIMEOUT, store.note(key))
                .await
                .map_err(|_| {
                    format!(
                        "state store {} did not answer within {}s",
                        store.display(),
                        STORE_TIMEOUT.as_secs()
                    )
                })
        }
    }
}
