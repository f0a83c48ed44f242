//! Destinations for alerts. Every destination is one file holding its settings beside its send
//! code and implementing [`Sink`]; a new destination is one new file plus a line in [`build`].
//!
//! Sinks make one attempt per call. Retries, rate limits and parking are added around every sink
//! by [`crate::delivery`], so no sink has its own retry loop.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::alert::Alert;
use crate::config::ConsumerConfig;

pub mod email;
pub mod http;
pub mod log;
pub mod mqtt;
pub mod script_log_disk;
pub mod slack;
pub mod teams;
pub mod template;
pub mod webhook;

/// Why one delivery attempt failed. Messages never hold a secret (webhook URLs are masked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: connection refused, timeout, 5xx, 429.
    #[error("{0}")]
    Transient(String),
    /// Retrying the same alert cannot succeed (4xx, template error): park it at once.
    #[error("{0}")]
    Permanent(String),
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

/// A destination. Implementations write `async fn send(&self, alert: &Alert) -> Result<…>`.
pub trait Sink: Send + Sync {
    /// Stable name, used in logs, rate-limit state and parked-alert files (e.g. `slack:<tenant>`).
    fn name(&self) -> &str;

    /// Whether this alert is for this destination (tenant, Butler's `alertEnableByTag`).
    fn accepts(&self, _alert: &Alert) -> bool {
        true
    }

    /// Butler's per-app `rateLimit`: at most one alert per app in this window. Zero: none.
    /// For a sink with [`Self::recipients`], per app and recipient.
    fn rate_limit(&self) -> Duration {
        Duration::ZERO
    }

    /// `None` (the default): one delivery of the alert. `Some(list)`: the sink sends each
    /// recipient a copy of its own (email), and the delivery layer rate-limits, retries and
    /// parks each copy on its own, handing [`Self::send`] the alert with
    /// [`Alert::recipient`] set. So one rejected address neither blocks nor repeats the
    /// others. An empty list means nobody is to get this alert.
    fn recipients(&self, _alert: &Alert) -> Option<Vec<String>> {
        None
    }

    /// One delivery attempt.
    fn send(&self, alert: &Alert) -> impl Future<Output = Result<(), SinkError>> + Send;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The object-safe form of [`Sink`], implemented for every sink, so the pipeline can hold a list.
pub trait DynSink: Send + Sync {
    fn name(&self) -> &str;
    fn accepts(&self, alert: &Alert) -> bool;
    fn rate_limit(&self) -> Duration;
    fn recipients(&self, alert: &Alert) -> Option<Vec<String>>;
    fn send_boxed<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>>;
}

impl<S: Sink> DynSink for S {
    fn name(&self) -> &str {
        Sink::name(self)
    }

    fn accepts(&self, alert: &Alert) -> bool {
        Sink::accepts(self, alert)
    }

    fn rate_limit(&self) -> Duration {
        Sink::rate_limit(self)
    }

    fn recipients(&self, alert: &Alert) -> Option<Vec<String>> {
        Sink::recipients(self, alert)
    }

    fn send_boxed<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(Sink::send(self, alert))
    }
}

/// A sink as the pipeline holds it.
pub type SharedSink = Arc<dyn DynSink>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot create the HTTP client: {0}")]
    Http(String),
    #[error("{key}: template file {path}: {reason}")]
    Template {
        key: String,
        path: String,
        reason: String,
    },
    #[error("MQTT destination: {0}")]
    Mqtt(String),
    #[error("{key}: {reason}")]
    Email { key: String, reason: String },
}

/// Every destination the configuration enables, in a stable order.
pub fn build(config: &ConsumerConfig) -> Result<Vec<SharedSink>, BuildError> {
    let client = http::client()?;
    let mut sinks: Vec<SharedSink> = Vec::new();
    if config.destinations.log {
        sinks.push(Arc::new(log::LogSink::new()));
    }
    if let Some(dir) = &config.script_log.log_directory {
        sinks.push(Arc::new(script_log_disk::ScriptLogDiskSink::new(
            script_log_disk::ScriptLogDiskConfig {
                log_directory: dir.clone(),
            },
        )));
    }
    for tenant in &config.tenants {
        if let Some(teams) = &tenant.alert.teams {
            let settings = teams::TeamsConfig::from_tenant(tenant, teams)?;
            sinks.push(Arc::new(teams::TeamsSink::new(settings, client.clone())));
        }
        if let Some(slack) = &tenant.alert.slack {
            let settings = slack::SlackConfig::from_tenant(tenant, slack)?;
            sinks.push(Arc::new(slack::SlackSink::new(settings, client.clone())));
        }
        if let Some(email) = &tenant.alert.email {
            let settings = email::EmailConfig::from_tenant(tenant, email, config.smtp.as_ref())?;
            sinks.push(Arc::new(email::EmailSink::new(settings)?));
        }
    }
    for destination in &config.destinations.webhooks {
        sinks.push(Arc::new(webhook::WebhookSink::new(
            webhook::WebhookConfig::from(destination),
            client.clone(),
        )));
    }
    if let Some(mqtt) = &config.destinations.mqtt {
        let settings = mqtt::MqttSinkConfig::from_config(config, mqtt);
        sinks.push(Arc::new(mqtt::MqttSink::new(settings)?));
    }
    Ok(sinks)
}
