//! Tenant filter: only events of configured tenants go on; others are logged and dropped (and
//! acknowledged, since no later attempt would change the outcome).

use qlik_events::Envelope;

use crate::config::{ConsumerConfig, TenantConfig};

/// The tenant configuration for this event, or `None` when the tenant is not configured.
pub fn tenant_for<'c>(config: &'c ConsumerConfig, envelope: &Envelope) -> Option<&'c TenantConfig> {
    config.tenant(&envelope.tenant_id)
}
