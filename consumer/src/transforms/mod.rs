//! Transforms between source and sinks, in order: parse the envelope, keep configured tenants,
//! react to failed reloads, drop duplicates, enrich into an alert. [`Transforms::handle`] runs
//! them for one message and delivers the alert; it returns an error only when the message must
//! not be acknowledged.

pub mod dedupe;
pub mod enrich;
pub mod parse;
pub mod reload;
pub mod tenant_filter;

use std::sync::Arc;

use crate::alert::Alert;
use crate::config::ConsumerConfig;
use crate::delivery::{Delivery, DeliveryError, Outcome};
use crate::sinks::mqtt::MqttDestination;
use dedupe::Dedupe;
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
    },
    /// A failed reload already handled earlier: the same event again, or another event about
    /// the same reload.
    Duplicate { event_id: String },
    /// A failed reload, delivered (or parked, or rate-limited) per sink.
    Alerted {
        alert: Box<Alert>,
        outcomes: Vec<(String, Outcome)>,
    },
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
    dedupe: Dedupe,
    enricher: Enricher,
    delivery: Arc<Delivery>,
}

impl Transforms {
    pub fn new(
        config: Arc<ConsumerConfig>,
        dedupe: Dedupe,
        enricher: Enricher,
        delivery: Arc<Delivery>,
    ) -> Self {
        let own_alerts = config
            .destinations
            .get::<MqttDestination>()
            .map(|m| own_alert_prefix(&m.topic))
            .filter(|p| !p.is_empty());
        Self {
            config,
            own_alerts,
            dedupe,
            enricher,
            delivery,
        }
    }

    pub async fn handle(&mut self, topic: &str, payload: &[u8]) -> Result<Handled, DeliveryError> {
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
            tracing::warn!(
                topic,
                event_id = %envelope.id,
                tenant = %envelope.tenant_id,
                "event from a tenant that is not configured, dropped"
            );
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
                });
            }
        };
        let mut keys = vec![dedupe::key(&envelope.tenant_id, &envelope.id)];
        if let Some(reload_id) = reload.reload_id.as_deref().filter(|id| !id.is_empty()) {
            keys.push(dedupe::reload_key(&envelope.tenant_id, reload_id));
        }
        if self.dedupe.seen_any(&keys) {
            tracing::info!(
                event_id = %envelope.id,
                tenant = %envelope.tenant_id,
                reload_id = reload.reload_id.as_deref().unwrap_or(""),
                "event or reload already alerted on (redelivery, Qlik retry, or the other event \
                 type of the same failed reload), dropped"
            );
            return Ok(Handled::Duplicate {
                event_id: envelope.id,
            });
        }
        let alert = self
            .enricher
            .build_alert(&self.config, tenant, &envelope, &reload)
            .await;
        tracing::info!(
            format = envelope.format.as_str(),
            "{}: reload failed, alerting",
            alert.describe()
        );
        let outcomes = self.delivery.deliver(&alert).await?;
        if let Err(e) = self.dedupe.remember_all(&keys).await {
            // The alert went out; failing here would only send it again.
            tracing::error!("{e}; a redelivery of this event would alert again");
        }
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
