//! Transforms between source and sinks, in order: parse the envelope, keep configured tenants,
//! react to failed reloads, drop duplicates, enrich into an alert. [`Transforms::handle`] runs
//! them for one message and delivers the alert; it returns an error only when the message must
//! not be acknowledged.

pub mod enrich;
pub mod parse;
pub mod reload;
pub mod tenant_filter;

use std::sync::Arc;

use crate::alert::Alert;
use crate::config::ConsumerConfig;
use crate::delivery::{Deliveries, DeliveryError, Outcome};
use crate::sinks::mqtt::MqttDestination;
use crate::state::dedupe;
use crate::state::{Begin, Claims};
use enrich::Enricher;
use reload::Reaction;

/// What became of one message; every variant means "acknowledge it".
#[derive(Debug, Clone, PartialEq)]
pub enum Handled {
    /// An alert this consumer re-published itself (the MQTT destination's topic lies under the
    /// subscription, e.g. `qscloud/#` with an alert topic `qscloud/alert/…`): skipped.
    OwnAlert { topic: String },
    /// Not a Qlik event (bad JSON, unknown envelope): dropped.
    Unparseable { topic: String, reason: String },
    /// From a tenant that is not configured: dropped.
    UnknownTenant { event_id: String, tenant_id: String },
    /// Not a failed reload: logged at debug.
    NoAlert {
        event_id: String,
        event_type: String,
        tenant_id: String,
    },
    /// A failed reload already handled earlier: the same event again, another event about the
    /// same reload, or one handled by another instance sharing the store.
    Duplicate { event_id: String, tenant_id: String },
    /// A failed reload, delivered (or parked, or rate-limited) per sink.
    Alerted {
        alert: Box<Alert>,
        outcomes: Vec<(String, Outcome)>,
    },
}

impl Handled {
    /// The `tenant` and `outcome` labels of `qscloud_consumer_events_total`.
    pub fn labels(&self) -> (&str, &'static str) {
        match self {
            Handled::Alerted { alert, .. } => (alert.tenant_id.as_str(), "alerted"),
            Handled::Duplicate { tenant_id, .. } => (tenant_id.as_str(), "duplicate"),
            Handled::NoAlert { tenant_id, .. } => (tenant_id.as_str(), "ignored"),
            Handled::UnknownTenant { .. } | Handled::OwnAlert { .. } => ("unknown", "ignored"),
            Handled::Unparseable { .. } => ("unknown", "invalid"),
        }
    }
}

/// The fixed start of the MQTT destination's topic template (up to its first placeholder), or
/// the whole topic when it has none.
pub fn own_alert_prefix(template: &str) -> String {
    match template.find('{') {
        Some(at) => template[..at].to_owned(),
        None => template.to_owned(),
    }
}

pub struct Transforms {
    config: Arc<ConsumerConfig>,
    own_alerts: Option<String>,
    claims: Claims,
    enricher: Enricher,
    delivery: Arc<Deliveries>,
    foreign: tenant_filter::ForeignTenants,
}

impl Transforms {
    pub fn new(
        config: Arc<ConsumerConfig>,
        claims: Claims,
        enricher: Enricher,
        delivery: Arc<Deliveries>,
    ) -> Self {
        let own_alerts = config
            .destinations
            .get::<MqttDestination>()
            .map(|m| own_alert_prefix(&m.topic))
            .filter(|p| !p.is_empty());
        Self {
            config,
            own_alerts,
            claims,
            enricher,
            delivery,
            foreign: tenant_filter::ForeignTenants::default(),
        }
    }

    /// Handles one message. Safe to run for many messages at once: a second event about a
    /// reload in hand waits for the first (the claim), and every other decision is the
    /// store's.
    pub async fn handle(&self, topic: &str, payload: &[u8]) -> Result<Handled, DeliveryError> {
        if self
            .own_alerts
            .as_deref()
            .is_some_and(|prefix| topic.starts_with(prefix))
        {
            tracing::debug!(topic, "own re-published alert, skipped");
            return Ok(Handled::OwnAlert {
                topic: topic.to_owned(),
            });
        }
        let envelope = match parse::parse(payload) {
            Ok(envelope) => envelope,
            Err(e) => {
                tracing::warn!(
                    topic,
                    bytes = payload.len(),
                    "not a Qlik event, dropped: {e}"
                );
                return Ok(Handled::Unparseable {
                    topic: topic.to_owned(),
                    reason: e.to_string(),
                });
            }
        };
        let Some(tenant) = tenant_filter::tenant_for(&self.config, &envelope) else {
            if self
                .foreign
                .log_now(&envelope.tenant_id, std::time::Instant::now())
            {
                let (configured, hint) = tenant_filter::configured(&self.config);
                tracing::warn!(
                    topic,
                    event_id = %envelope.id,
                    tenant = %envelope.tenant_id,
                    configured = %configured,
                    hint = hint.as_deref().unwrap_or(""),
                    "events from a tenant that is not configured are dropped (logged once an \
                     hour per tenant; counted in qscloud_consumer_events_total as ignored)"
                );
            } else {
                tracing::debug!(
                    event_id = %envelope.id,
                    tenant = %envelope.tenant_id,
                    "event from a tenant that is not configured, dropped"
                );
            }
            return Ok(Handled::UnknownTenant {
                event_id: envelope.id,
                tenant_id: envelope.tenant_id,
            });
        };
        let reload = match reload::react(&envelope) {
            Reaction::Alert(reload) => reload,
            Reaction::ReloadOk(reload) => {
                tracing::debug!(
                    event_id = %envelope.id,
                    tenant = %envelope.tenant_id,
                    app_id = reload.app_id.as_deref().unwrap_or(""),
                    status = %reload.status,
                    "reload did not fail, no alert"
                );
                return Ok(Handled::NoAlert {
                    event_id: envelope.id,
                    event_type: envelope.event_type,
                    tenant_id: envelope.tenant_id,
                });
            }
            Reaction::Other => {
                tracing::debug!(
                    event_id = %envelope.id,
                    tenant = %envelope.tenant_id,
                    event_type = %envelope.event_type,
                    "not a reload event, no alert"
                );
                return Ok(Handled::NoAlert {
                    event_id: envelope.id,
                    event_type: envelope.event_type,
                    tenant_id: envelope.tenant_id,
                });
            }
        };
        let event_key = dedupe::key(&envelope.tenant_id, &envelope.id);
        let reload_key = reload
            .reload_id
            .as_deref()
            .filter(|id| !id.is_empty())
            .map(|id| dedupe::reload_key(&envelope.tenant_id, id));
        // One alert per failed reload: Qlik sends an app reload event and a reload event for
        // it, with different event ids. Claiming the reload (not the event) makes the second
        // one a duplicate here and on every other instance sharing the store; the event id
        // stays remembered too, for events alerted before reload ids were.
        let claim_key = reload_key.clone().unwrap_or_else(|| event_key.clone());
        let begin = if reload_key.is_some() && self.claims.seen(&event_key).await {
            Begin::Duplicate
        } else {
            self.claims.begin(&claim_key).await
        };
        let Begin::Handle(claim) = begin else {
            tracing::info!(
                event_id = %envelope.id,
                tenant = %envelope.tenant_id,
                reload_id = reload.reload_id.as_deref().unwrap_or(""),
                "event or reload already alerted on (redelivery, Qlik retry, the other event \
                 type of the same failed reload, or another instance), dropped"
            );
            return Ok(Handled::Duplicate {
                event_id: envelope.id,
                tenant_id: envelope.tenant_id,
            });
        };
        let alert = self
            .enricher
            .build_alert(&self.config, tenant, &envelope, &reload)
            .await;
        tracing::info!(
            format = envelope.format.as_str(),
            "{}: reload failed, alerting",
            alert.describe()
        );
        // The claim key names the alert's rate-limit reservations: whoever holds the claim
        // (this instance, or one that takes the reload over) may use them.
        let outcomes = self.delivery.deliver(&alert, claim.key()).await?;
        let also = if reload_key.is_some() {
            vec![event_key]
        } else {
            Vec::new()
        };
        self.claims.finish(claim, &also).await;
        Ok(Handled::Alerted {
            alert: Box::new(alert),
            outcomes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_alert_prefix_is_the_fixed_part_of_the_topic() {
        assert_eq!(
            own_alert_prefix("qscloud/alert/{tenantId}/{appId}"),
            "qscloud/alert/"
        );
        assert_eq!(own_alert_prefix("alerts/all"), "alerts/all");
        assert_eq!(own_alert_prefix("{tenantId}/alerts"), "");
    }
}
