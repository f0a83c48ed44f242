//! The configuration's settings, section by section, and the key walking every section and
//! destination reads its keys with ([`Node`], [`Problems`]): what the destinations
//! ([`crate::sinks`]) and the assembled configuration ([`crate::config`]) both build on, so
//! neither imports the other's internals.

mod alert;
mod broker;
mod error;
mod extension;
pub mod keys;
mod node;
mod secret;
mod smtp;
mod store;

pub use alert::AlertEnableByTag;
pub(crate) use alert::{BUTLER_RATE_LIMIT_SECS, block_enabled, rate_limit, script_log_lines};
pub use broker::{BrokerConfig, FORWARD, MQTT_PASSWORD_ENV, TopicConfig};
pub(crate) use broker::{filter_matches, parse_forward};
pub use error::{ConfigErrors, Problem};
pub(crate) use extension::parse_digest_settings;
pub use extension::{
    CONSUMER, ConsumerSettings, DEFAULT_CONCURRENCY, DEFAULT_DIGEST, DEFAULT_REDELIVERY_SCHEDULE,
    DEFAULT_SHUTDOWN_GRACE, DedupeConfig, DigestConfig, EnrichmentConfig, RedeliveryConfig,
    RetryConfig, WatchdogConfig,
};
pub(crate) use node::{Node, Problems, is_placeholder};
pub(crate) use secret::{Absent, Env, resolve_secret};
pub use secret::{SecretSource, SecretUrl};
pub use smtp::{
    SMTP, SMTP_PASSWORD_ENV, SmtpAuth, SmtpConfig, SmtpSecurity, is_loopback_host, parse_mailbox,
};
pub(crate) use smtp::{email_wanted, parse_smtp};
#[cfg(test)]
pub(crate) use store::parse_ha as parse_ha_for_tests;
pub use store::{HaConfig, REDIS_PASSWORD_ENV, RedisUrl, StateStoreConfig};
