//! The consumer as a library, so integration tests can drive its parts.
//!
//! Pipeline, in the style of Vector: [`source`] (MQTT) → [`transforms`] (parse, tenant filter,
//! react, dedupe, enrich) → [`delivery`] (rate limit, retry, park) around each of the [`sinks`].

pub mod alert;
pub mod config;
pub mod delivery;
pub mod enrich;
pub mod exit;
pub mod pipeline;
pub mod sinks;
pub mod source;
pub mod state;
pub mod tenant_api;
pub mod transforms;
pub mod webhooks;
