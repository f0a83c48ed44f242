//! Enrichment through the tenant REST API ([`crate::tenant_api`]), and the alert context built
//! from it.
//!
//! [`TenantClient::enrich`](crate::tenant_api::TenantClient::enrich) fetches what an alert can
//! use (reload, script log, app, app tags, owner) and never fails: whatever could not be fetched
//! is listed in [`Enrichment::missing`]. [`build_context`] then turns event + enrichment into an
//! [`AlertContext`] with Butler's template field names.

mod context;
mod fetch;

pub use crate::script_log::{
    CHAT_SCRIPT_LOG_MAX_CHARS, ScriptLogParts, group_thousands, script_log_parts,
};
pub use context::{
    AlertContext, ExecutionCreationTime, ExecutionDuration, ExecutionStartTime, ExecutionStopTime,
    build_context,
};
pub(crate) use fetch::within;
pub use fetch::{EnrichError, Enrichment, Missing, Resource};

#[cfg(test)]
mod tests;
