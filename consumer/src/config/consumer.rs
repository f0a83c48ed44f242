//! [`ConsumerConfig`]: everything the consumer needs, as loaded ([`super::load`]).

use std::path::PathBuf;

use super::tenant::TenantConfig;
use crate::settings::{BrokerConfig, ConsumerSettings, SmtpConfig, TopicConfig};
use crate::sinks::Destinations;

/// Everything the consumer needs, read from Butler's YAML plus the optional extension file.
///
/// Every field is already checked: URLs parse and obey the loopback rule, required Butler keys
/// are present, secrets are resolved (file or environment). Code that builds sources and sinks
/// can use these values without re-validating them. Secrets are `SecretString` or
/// [`SecretUrl`], so a `{:?}` of any of these types never prints one.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Butler's single `Butler.qlikSenseCloud.event.mqtt.tenant` (when present) followed by the
    /// extension list `Butler.qlikSenseCloud.event.mqtt.tenants`. At least one; ids are unique.
    pub tenants: Vec<TenantConfig>,
    /// `Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker` plus its extension keys.
    pub broker: BrokerConfig,
    /// `Butler.mqttConfig.qlikSenseCloud.event.mqttForward.topic`.
    pub topics: TopicConfig,
    /// `Butler.genericUrls`: passed to templates as `genericUrls`, as Butler does.
    pub generic_urls: Vec<GenericUrl>,
    /// Extension `Butler.qlikSenseCloud.consumer` but its destinations: state, dedupe,
    /// delivery, digests, the watchdog, the tenant API, high availability. Each key is declared
    /// once in [`crate::settings`], with its default and bounds.
    pub consumer: ConsumerSettings,
    /// Destinations for failed reloads of every configured tenant: the extension's
    /// `Butler.qlikSenseCloud.consumer.destinations` and Butler's script log to disk. Butler's
    /// per-tenant alerts are in [`TenantConfig::alert`].
    pub destinations: Destinations,
    /// `Butler.emailNotification.smtp` plus its extension keys. Read (and required) only when
    /// some tenant's email alert is enabled, since Butler lets an unused block hold placeholders.
    pub smtp: Option<SmtpConfig>,
    /// Files the configuration was read from, in merge order (main file, then extensions).
    pub sources: Vec<PathBuf>,
}

impl ConsumerConfig {
    /// The tenant with this id (as sent in the event's `tenantid` / `extensions.tenantId`).
    pub fn tenant(&self, tenant_id: &str) -> Option<&TenantConfig> {
        self.tenants.iter().find(|t| t.id == tenant_id)
    }

    /// The state backend this configuration names (files in the state directory, or Redis).
    pub fn open_state(
        &self,
    ) -> Result<std::sync::Arc<dyn crate::state::StateBackend>, crate::state::StoreError> {
        let c = &self.consumer;
        crate::state::open(&c.ha.state_store, &c.state_dir, c.dedupe.retention)
    }

    /// What building a destination needs from the rest of this configuration.
    pub fn sink_context(&self) -> crate::sinks::Context<'_> {
        crate::sinks::Context {
            digest: &self.consumer.digest,
            smtp: self.smtp.as_ref(),
            broker: &self.broker,
        }
    }

    /// Every destination, in the order `check-config` lists them and alerts are handed out.
    pub fn destinations_in_order(&self) -> Vec<&dyn crate::sinks::Destination> {
        crate::sinks::in_order(&self.destinations, self.tenants.iter().map(|t| &t.alert))
    }

    /// Every destination's sink, built for `purpose` (`consumer run`, or `replay`).
    pub fn build_sinks(
        &self,
        purpose: crate::sinks::Purpose,
    ) -> Result<Vec<crate::sinks::SharedSink>, crate::sinks::BuildError> {
        crate::sinks::build(&self.destinations_in_order(), &self.sink_context(), purpose)
    }

    /// The relay URL the watchdog looks for in this tenant's webhooks: the tenant's own
    /// `watchdog.relayUrl`, else `consumer.watchdog.relayUrl`; `None`: not watched.
    pub fn relay_url_of<'a>(&'a self, tenant: &'a TenantConfig) -> Option<&'a url::Url> {
        tenant
            .watchdog_relay_url
            .as_ref()
            .or(self.consumer.watchdog.relay_url.as_ref())
    }
}

/// One entry of `Butler.genericUrls`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GenericUrl {
    pub id: String,
    #[serde(rename = "linkText")]
    pub link_text: String,
    pub comment: String,
    pub url: String,
}
