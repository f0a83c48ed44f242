//! The consumer as a library, so integration tests can drive its parts.
//!
//! Pipeline, in the style of Vector: [`source`] (MQTT) → [`transforms`] (parse, tenant filter,
//! react, dedupe, enrich) → [`delivery`] (rate limit, retry, park) around each of the [`sinks`].
//! Beside it: [`tenant_api`], the one client for a tenant's REST API (enrichment and the
//! [`webhooks`] commands), [`state`] for what is kept on disk, and the [`exit`] codes.

pub mod alert;
pub mod check;
pub mod config;
pub mod delivery;
pub mod digest;
pub mod enrich;
pub mod exit;
pub mod metrics;
pub mod metrics_server;
pub mod pipeline;
pub mod script_log;
pub mod settings;
pub mod sinks;
pub mod source;
pub mod state;
pub mod tenant_api;
pub mod tenant_id;
pub mod transforms;
pub mod watchdog;
pub mod webhooks;
