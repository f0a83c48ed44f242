//! Configuration: Butler's own YAML file, unchanged, plus an optional extension file that only
//! this consumer reads (Butler validates its file strictly, so keys it does not know must live
//! elsewhere). The extension file has the same shape as Butler's (`Butler: …`) and is merged over
//! it: mappings merge key by key, anything else (scalars, lists) replaces. Extension keys are also
//! accepted in the main file.
//!
//! Everything is validated at load time and every problem is reported with its dotted key path.
//! See docs/configuration.md ("Consumer configuration reference").

mod consumer;
mod load;
mod parse;
mod report;
mod tenant;

pub use crate::settings::{
    AlertEnableByTag, BrokerConfig, CONSUMER, ConfigErrors, ConsumerSettings, DEFAULT_CONCURRENCY,
    DEFAULT_DIGEST, DEFAULT_REDELIVERY_SCHEDULE, DedupeConfig, DigestConfig, EnrichmentConfig,
    FORWARD, HaConfig, MQTT_PASSWORD_ENV, Problem, REDIS_PASSWORD_ENV, RedeliveryConfig, RedisUrl,
    RetryConfig, SMTP, SMTP_PASSWORD_ENV, SecretSource, SecretUrl, SmtpAuth, SmtpConfig,
    SmtpSecurity, StateStoreConfig, TopicConfig, WatchdogConfig, is_loopback_host, parse_mailbox,
};
pub use consumer::{ConsumerConfig, GenericUrl};
#[cfg(test)]
pub(crate) use load::for_tests;
pub use load::{default_extensions_path, load, load_with_env};
pub use parse::QSC;
pub use report::summary;
pub use tenant::{
    AuthType, TENANT, TENANT_JWT_ENV, TENANTS, TenantConfig, is_tenant_id, tenant_jwt_env_var,
};

pub use crate::sinks::script_log_disk::SCRIPT_LOG;
pub use crate::sinks::{Destinations, TenantAlerts};
