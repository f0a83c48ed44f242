//! Tenant filter: only events of configured tenants go on; others are logged and dropped (and
//! acknowledged, since no later attempt would change the outcome). A foreign tenant's events
//! are logged once an hour per tenant, with what is configured, so a log is not flooded and a
//! wrong `id` still explains itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use qlik_events::Envelope;

use crate::config::{ConsumerConfig, TenantConfig};

/// The tenant configuration for this event, or `None` when the tenant is not configured.
pub fn tenant_for<'c>(config: &'c ConsumerConfig, envelope: &Envelope) -> Option<&'c TenantConfig> {
    config.tenant(&envelope.tenant_id)
}

/// How often one foreign tenant's events are logged.
const LOG_EVERY: Duration = Duration::from_secs(3600);
/// Foreign tenants remembered at most: whoever can publish under the subscription cannot grow
/// this without end (forgetting one only logs it again).
const REMEMBERED: usize = 1000;

/// When each foreign tenant was last logged.
#[derive(Default)]
pub struct ForeignTenants(Mutex<HashMap<String, Instant>>);

impl ForeignTenants {
    /// Whether an event of `tenant` is to be logged at `now` (the first, then one an hour).
    pub fn log_now(&self, tenant: &str, now: Instant) -> bool {
        let mut seen = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen
            .get(tenant)
            .is_some_and(|at| now.saturating_duration_since(*at) < LOG_EVERY)
        {
            return false;
        }
        if seen.len() >= REMEMBERED {
            seen.retain(|_, at| now.saturating_duration_since(*at) < LOG_EVERY);
            if seen.len() >= REMEMBERED {
                seen.clear();
            }
        }
        seen.insert(tenant.to_owned(), now);
        true
    }
}

/// What is configured, for the log line: each tenant's id (with the hostname it was configured
/// by), and a hint when a tenant was given by hostname: its events carry the id it resolved to,
/// so an event of another id is another tenant's.
pub fn configured(config: &ConsumerConfig) -> (String, Option<String>) {
    let ids: Vec<String> = config.tenants.iter().map(|t| t.display_name()).collect();
    let by_host: Vec<String> = config
        .tenants
        .iter()
        .filter(|t| t.configured_id.is_some())
        .map(|t| t.display_name())
        .collect();
    let hint = (!by_host.is_empty()).then(|| {
        format!(
            "configured by hostname and resolved through the tenant API: {}; an event of another \
             id comes from another tenant (a webhook of a tenant not configured here, or a JWT of \
             the wrong tenant)",
            by_host.join(", ")
        )
    });
    (ids.join(", "), hint)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_tenant_is_logged_once_an_hour() {
        let foreign = ForeignTenants::default();
        let t0 = Instant::now();
        assert!(foreign.log_now("A", t0));
        assert!(!foreign.log_now("A", t0 + Duration::from_secs(1)));
        assert!(
            foreign.log_now("B", t0 + Duration::from_secs(1)),
            "per tenant"
        );
        assert!(!foreign.log_now("A", t0 + Duration::from_secs(3599)));
        assert!(foreign.log_now("A", t0 + Duration::from_secs(3600)));
    }

    #[test]
    fn many_foreign_tenants_do_not_grow_the_memory_without_end() {
        let foreign = ForeignTenants::default();
        let t0 = Instant::now();
        for i in 0..(REMEMBERED * 3) {
            assert!(foreign.log_now(&format!("t{i}"), t0));
        }
        assert!(foreign.0.lock().map(|m| m.len()).unwrap_or(0) <= REMEMBERED);
    }
}
