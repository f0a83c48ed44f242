//! Enrich: turn a failed reload into an [`Alert`] with Butler's template fields, using the
//! tenant REST API through [`crate::enrich`].

use qlik_events::{Envelope, ReloadEvent};
use serde_json::{Map, Value, json};

use crate::alert::Alert;
use crate::config::{ConsumerConfig, TenantConfig};

/// Builds the alert for a failed reload of a configured tenant.
pub async fn build_alert(
    config: &ConsumerConfig,
    tenant: &TenantConfig,
    envelope: &Envelope,
    reload: &ReloadEvent,
) -> Alert {
    let context = event_context(config, tenant, envelope, reload);
    Alert {
        event_id: envelope.id.clone(),
        event_type: envelope.event_type.clone(),
        tenant_id: envelope.tenant_id.clone(),
        app_id: reload.app_id.clone(),
        reload_id: reload.reload_id.clone(),
        event_time: envelope.time.clone(),
        app_tags: Vec::new(),
        script_log: None,
        context,
    }
}

/// What the event itself says, with Butler's field names.
fn event_context(
    config: &ConsumerConfig,
    tenant: &TenantConfig,
    envelope: &Envelope,
    reload: &ReloadEvent,
) -> Map<String, Value> {
    let tenant_url = tenant.tenant_url_str();
    let app_url = reload
        .app_id
        .as_ref()
        .map(|id| format!("{tenant_url}/sense/app/{id}"));
    let duration = reload.duration_ms.unwrap_or_default() / 1000;
    let value = json!({
        "tenantId": tenant.id,
        "tenantComment": tenant.comment,
        "tenantUrl": tenant_url,
        "appId": reload.app_id,
        "appName": reload.app_name,
        "appUrl": app_url,
        "reloadId": reload.reload_id,
        "status": reload.status,
        "errorCode": reload.error_code,
        "errorMessage": reload.error_message,
        "eventType": envelope.event_type,
        "eventId": envelope.id,
        "executionDuration": {
            "hours": duration / 3600,
            "minutes": (duration % 3600) / 60,
            "seconds": duration % 60,
        },
        "executionStartTime": {"startTimeUTC": reload.start_time},
        "executionStopTime": {"stopTimeUTC": reload.end_time},
        "scriptLogHead": "",
        "scriptLogTail": "",
        "qlikSenseQMC": tenant.qmc_url,
        "qlikSenseHub": tenant.hub_url,
        "genericUrls": config.generic_urls,
    });
    value.as_object().cloned().unwrap_or_default()
}
