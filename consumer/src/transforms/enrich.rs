//! Enrich: turn a failed reload into an [`Alert`] with Butler's template fields, fetching what
//! the event lacks from the tenant REST API ([`crate::enrich`]). Never fails: what could not be
//! fetched is listed in the context's `missing` field and the alert goes out anyway.
//!
//! What is fetched depends on the destinations that may get a tenant's alerts (Butler's
//! `basicContentOnly`): when every one of them that has a need is content with the event, no
//! API call is made; when some of them only need the app's tags for `alertEnableByTag`, only
//! those are fetched. Destinations without a need of their own (the log) do not count; with
//! none that has one, everything is fetched, as without `basicContentOnly`.

use std::collections::HashMap;

use qlik_events::{Envelope, ReloadEvent};

use crate::alert::Alert;
use crate::config::{ConsumerConfig, TenantConfig};
use crate::enrich::{EnrichError, Enrichment, Missing, Resource, build_context, within};
use crate::sinks::TenantApi;
use crate::tenant_api::TenantClient;

/// Head/tail lines in the shared context (what webhook and MQTT receive); chat destinations
/// recompute them with their own counts.
pub const DEFAULT_HEAD_LINES: usize = 10;
pub const DEFAULT_TAIL_LINES: usize = 10;

pub struct Enricher {
    /// One API client per tenant id, with what its alerts need; empty when enrichment is
    /// switched off.
    clients: HashMap<String, (TenantClient, TenantApi)>,
}

/// What the destinations that may get this tenant's alerts need from its API.
fn tenant_api(config: &ConsumerConfig, tenant: &TenantConfig) -> TenantApi {
    config
        .destinations
        .iter()
        .chain(tenant.alert.iter())
        .filter_map(|d| d.tenant_api())
        .max()
        .unwrap_or(TenantApi::Everything)
}

/// Only the app's tags, for `alertEnableByTag` of a `basicContentOnly` destination.
async fn tags_only(client: &TenantClient, envelope: &Envelope, reload: &ReloadEvent) -> Enrichment {
    let mut enrichment = Enrichment::event_only();
    let Some(app_id) = reload.app_id.clone().or_else(|| envelope.app_id()) else {
        return enrichment;
    };
    let limit = client.settings().deadline;
    let item = within(tokio::time::Instant::now() + limit, limit, async {
        client.app_item(&app_id).await?.ok_or(EnrichError::NoItem)
    })
    .await;
    match item {
        Ok(item) => enrichment.app_item = Some(item),
        Err(e) => {
            tracing::warn!(
                tenant = %envelope.tenant_id,
                event_id = %envelope.id,
                reason = %e,
                "tenant API: could not fetch the app tags; tag-gated destinations get no alert"
            );
            enrichment.missing.push(Missing {
                what: Resource::AppTags,
                reason: e.to_string(),
            });
        }
    }
    enrichment
}

impl Enricher {
    pub fn new(config: &ConsumerConfig) -> Result<Self, EnrichError> {
        let mut clients = HashMap::new();
        if config.consumer.enrichment.enable {
            for tenant in &config.tenants {
                let client = TenantClient::new(tenant, &config.consumer.enrichment)?;
                clients.insert(tenant.id.clone(), (client, tenant_api(config, tenant)));
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
            Some((client, TenantApi::Everything)) => client.enrich(envelope, reload).await,
            Some((client, TenantApi::Tags)) => tags_only(client, envelope, reload).await,
            Some((_, TenantApi::Nothing)) | None => Enrichment::event_only(),
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
            app_id: reload.app_id.clone().or_else(|| envelope.app_id()),
            reload_id: reload.reload_id.clone(),
            event_time: envelope.time.clone(),
            app_tags: enrichment.app_tags().to_vec(),
            script_log: enrichment.script_log.clone(),
            context,
            ..Alert::new(&envelope.id, &envelope.event_type, &envelope.tenant_id)
        }
    }
}
