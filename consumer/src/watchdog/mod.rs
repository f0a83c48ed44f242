//! The webhook watchdog: the consumer keeps Qlik's side of the chain healthy. Qlik disables a
//! webhook whose deliveries keep failing (the relay or the broker down, a certificate expired)
//! and tells no one; from then on every failed reload goes unnoticed. Every
//! `watchdog.intervalSeconds` the watchdog looks at each tenant's webhooks to the relay
//! ([`check`]): a disabled one is re-enabled and announced, a missing one announced, and failed
//! deliveries are resent once each.
//!
//! With several consumers on a shared store, one of them runs the checks at a time (a lease,
//! renewed several times per interval); if it dies, another takes over within one interval.

pub mod check;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use url::Url;

use crate::config::{ConsumerConfig, TenantConfig};
use crate::delivery::Deliveries;
use crate::state::{StateBackend, now_unix};
pub use check::Checker;
pub use report::{CheckOutcome, TenantReport, WebhookState, report_key};

const LEASE: &str = "webhook-watchdog";
/// When the group's last check started (Unix seconds), so a consumer that takes the lease
/// over does not check again at once.
const LAST_CHECK: &str = "watchdog:last-check";

/// Told about every report (the pipeline's observer, in tests and embeddings).
pub type Observer = Box<dyn Fn(TenantReport) + Send + Sync>;

pub struct Watchdog {
    checker: Checker,
    tenants: Vec<(TenantConfig, Url)>,
    interval: Duration,
    observer: Option<Observer>,
}

impl Watchdog {
    /// `None` when no tenant has a relay URL to watch.
    pub fn new(
        config: &ConsumerConfig,
        store: Arc<dyn StateBackend>,
        deliveries: Arc<Deliveries>,
        instance: &str,
        observer: Option<Observer>,
    ) -> Option<Self> {
        let tenants: Vec<(TenantConfig, Url)> = config
            .tenants
            .iter()
            .filter_map(|t| config.relay_url_of(t).map(|url| (t.clone(), url.clone())))
            .collect();
        if tenants.is_empty() {
            return None;
        }
        Some(Self {
            checker: Checker {
                store,
                deliveries,
                enrichment: config.consumer.enrichment.clone(),
                reenable: config.consumer.watchdog.reenable,
                instance: instance.to_owned(),
            },
            tenants,
            interval: config.consumer.watchdog.interval,
            observer,
        })
    }

    /// Runs until aborted (the consumer stops).
    pub async fn run(self) {
        // The lease lasts half an interval and is renewed four times per interval, so a dead
        // holder's lease runs out, and another consumer has it, within one interval.
        let tick = (self.interval / 4).max(Duration::from_secs(1));
        let lease = (self.interval / 2).max(tick * 2);
        let store = Arc::clone(&self.checker.store);
        let instance = self.checker.instance.clone();
        let mut ticks = tokio::time::interval(tick);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if !store.lease(LEASE, &instance, lease).await {
                continue;
            }
            let last = store
                .note(LAST_CHECK)
                .await
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
            let now = now_unix();
            if now.saturating_sub(last) < self.interval.as_secs() {
                continue;
            }
            store
                .set_note(LAST_CHECK, &now.to_string(), self.interval * 4)
                .await;
            for (tenant, relay) in &self.tenants {
                // Held through slow tenants, so nobody else checks meanwhile.
                store.lease(LEASE, &instance, lease).await;
                let report = self.checker.check(tenant, relay).await;
                if let Some(observer) = &self.observer {
                    observer(report);
                }
            }
        }
    }
}
