//! Enrich: turn a failed reload into an [`Alert`] with Butler's template fields, fetching what
//! the event lacks from the tenant REST API ([`crate::enrich`]). Never fails: what could not be
//! fetched is listed in the context's `missing` field and the alert goes out anyway.

use std::collections::HashMap;

use qlik_events::{Envelope, ReloadEvent};

use crate::alert::Alert;
use crate::config::{ConsumerConfig, TenantConfig};
use crate::enrich::{EnrichError, Enrichment, build_context};
use crate::tenant_api::TenantClient;

/// Head/tail lines in the shared context (what webhook and MQTT receive); chat destinations
/// recompute them with their own counts.
pub const DEFAULT_HEAD_LINES: usize = 10;
pub const DEFAULT_TAIL_LINES: usize = 10;

pub struct Enricher {
    /// One API client per tenant id; empty when enrichment is switched off.
    clients: HashMap<String, TenantClient>,
}

impl Enricher {
    pub fn new(config: &ConsumerConfig) -> Result<Self, EnrichError> {
        let mut clients = HashMap::new();
        if config.enrichment.enable {
            for tenant in &config.tenants {
                clients.insert(
                    tenant.id.clone(),
                    TenantClient::new(tenant, &config.enrichment)?,
                );
            }
        }
        Ok(Self { clients })
    }

    /// Builds the alert for a failed reload of a configured tenant.
    pub async fn build_alert(
        &self,
        config: &ConsumerConfig,
        tenant: &TenantConfig,
        envelope: &Envelope,
        reload: &ReloadEvent,
    ) -> Alert {
        let enrichment = match self.clients.get(&tenant.id) {
            Some(client) => client.enrich(envelope, reload).await,
            None => Enrichment::event_only(),
        };
        let context = build_context(
            envelope,
            reload,
            tenant,
            &enrichment,
            DEFAULT_HEAD_LINES,
            DEFAULT_TAIL_LINES,
        )
        .with_generic_urls(&config.generic_urls)
        .to_json();
        Alert {
            event_id: envelope.id.clone(),
            event_type: envelope.event_type.clone(),
            tenant_id: envelope.tenant_id.clone(),
            app_id: reload.app_id.clone().or_else(|| envelope.app_id()),
            reload_id: reload.reload_id.clone(),
            event_time: envelope.time.clone(),
            app_tags: enrichment.app_tags().to_vec(),
            script_log: enrichment.script_log.clone(),
            context,
            recipient: None,
        }
    }
}
