//! Enrichment through the tenant REST API, and the alert context built from it.
//!
//! [`TenantClient::enrich`] fetches what an alert can use (reload, script log, app, app tags,
//! owner) and never fails: whatever could not be fetched is listed in [`Enrichment::missing`].
//! [`build_context`] then turns event + enrichment into an [`AlertContext`] with Butler's
//! template field names.

mod api;
mod client;
mod context;

pub use api::{AppInfo, AppItem, ReloadInfo, UserInfo};
pub use client::{EnrichError, Enrichment, Missing, Resource, TenantClient};
pub(crate) use client::{retry_after, retryable};
pub use context::{
    AlertContext, CHAT_SCRIPT_LOG_MAX_CHARS, ExecutionCreationTime, ExecutionDuration,
    ExecutionStartTime, ExecutionStopTime, ScriptLogParts, build_context, group_thousands,
    script_log_parts,
};

#[cfg(test)]
mod tests;
