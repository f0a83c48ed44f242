//! MQTT re-publish (extension `Butler.qlikSenseCloud.consumer.destinations.mqtt`): the alert as
//! JSON ([`Alert::payload`]) on `topic` (default `qscloud-alerts/{tenantId}/{appId}`), QoS 1, on
//! the consumer's broker. A send counts as delivered only when the broker acknowledged that
//! very publish (PUBACK with its packet id).
//!
//! Each send uses its own short connection with client id `<clientId>-alerts` (`<clientId>-replay`
//! in `consumer replay`, see [`Purpose`]) and a clean session: alerts are rare, and sharing the
//! subscriber's connection would tie delivery to the subscription's manual acknowledgements.
//!
//! Alert storms are folded into digests only with a `digest` block of its own
//! ([`crate::digest`]); a digest is published as [`crate::alert::digest_payload`] on the same
//! topic (`{appId}` is `unknown` there: a digest names many apps).

use std::sync::Arc;
use std::time::Duration;

use qlik_events::mqtt::{ConfirmedPublisher, Connector, PublishError};
use tokio::sync::Mutex;

use super::{
    BuildError, Context, Destination, Kind, Preview, Purpose, SharedSink, Sink, SinkError,
};
use crate::alert::Alert;
use crate::settings::{Node, Problems, block_enabled, rate_limit};
use crate::digest::DigestSettings;

pub(crate) const KIND: Kind = Kind::Global(parse);

/// The sink's name.
const MQTT_SINK: &str = "mqtt";

/// Extension `mqtt`: re-publish of alerts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttDestination {
    /// `topic` (default `qscloud-alerts/{tenantId}/{appId}`, outside the event tree
    /// `qscloud/#` so the broker ACL can keep alerts and events apart); `{tenantId}` and
    /// `{appId}` are replaced with sanitized values.
    pub topic: String,
    /// `retain` (default false).
    pub retain: bool,
    /// `rateLimit` seconds per app (default 0: none).
    pub rate_limit: Duration,
    /// `digest` (`afterAlerts`, `windowSeconds`): fold alert storms; `None` (absent): never.
    pub digest: Option<DigestSettings>,
}

fn parse(butler: &Node<'_>, p: &mut Problems) -> Vec<Arc<dyn Destination>> {
    let m = super::extension_key(butler, "mqtt");
    if !block_enabled(&m, p) {
        return vec![];
    }
    let topic = m
        .child("topic")
        .opt_string(p)
        .unwrap_or_else(|| "qscloud-alerts/{tenantId}/{appId}".to_owned());
    if topic.contains(['+', '#', '\0']) || topic.starts_with('$') {
        p.add(
            format!("{}.topic", m.path),
            "must be a topic (no `+`, `#`, leading `$`)",
        );
    }
    vec![Arc::new(MqttDestination {
        topic,
        retain: m.child("retain").bool_or(p, false),
        rate_limit: rate_limit(&m, 0, p),
        digest: super::webhook::parse_digest(&m, p),
    })]
}

impl Destination for MqttDestination {
    fn sink_name(&self) -> String {
        MQTT_SINK.to_owned()
    }

    fn summary(&self, _config: &Context<'_>) -> Option<String> {
        let retained = if self.retain { " (retained)" } else { "" };
        Some(format!(
            "MQTT re-publish to {}{retained}{}",
            self.topic,
            super::webhook::digest_summary(self.digest)
        ))
    }

    fn build(
        &self,
        config: &Context<'_>,
        client: &reqwest::Client,
    ) -> Result<SharedSink, BuildError> {
        self.build_for(config, client, Purpose::Run)
    }

    fn build_for(
        &self,
        config: &Context<'_>,
        _client: &reqwest::Client,
        purpose: Purpose,
    ) -> Result<SharedSink, BuildError> {
        let settings = MqttSinkConfig::from_config(config, self, purpose);
        Ok(Arc::new(MqttSink::new(settings)?))
    }
}

#[derive(Debug, Clone)]
pub struct MqttSinkConfig {
    pub broker: qlik_events::BrokerSettings,
    pub topic: String,
    pub retain: bool,
    pub rate_limit: Duration,
    pub timeout: Duration,
    /// The destination's `digest` block, unless `consumer.digest.enable` is false.
    pub digest: Option<DigestSettings>,
}

impl MqttSinkConfig {
    pub fn from_config(config: &Context<'_>, mqtt: &MqttDestination, purpose: Purpose) -> Self {
        let mut broker = config.broker.broker_settings();
        let role = match purpose {
            Purpose::Run => "alerts",
            Purpose::Replay => "replay",
            // Never connects; named apart all the same.
            Purpose::Preview => "preview",
        };
        broker.client_id = format!("{}-{role}", config.broker.client_id);
        Self {
            broker,
            topic: mqtt.topic.clone(),
            retain: mqtt.retain,
            rate_limit: mqtt.rate_limit,
            timeout: Duration::from_secs(10),
            digest: mqtt.digest.filter(|_| config.digest.enable),
        }
    }
}

pub struct MqttSink {
    config: MqttSinkConfig,
    /// The broker speaks the configured MQTT version: brokers such as rumqttd serve 3.1.1 and 5
    /// on different ports.
    connector: Connector,
    /// One connection at a time: they share a client id.
    busy: Mutex<()>,
}

impl MqttSink {
    pub fn new(config: MqttSinkConfig) -> Result<Self, BuildError> {
        let connector = ConfirmedPublisher::connector(&config.broker, 4)
            .map_err(|e| BuildError::Mqtt(e.to_string()))?;
        Ok(Self {
            config,
            connector,
            busy: Mutex::new(()),
        })
    }

    /// The topic for an alert: `{tenantId}` and `{appId}` replaced by sanitized values.
    pub fn topic_for(&self, alert: &Alert) -> String {
        let sanitize = qlik_events::topic::sanitize;
        self.config
            .topic
            .replace("{tenantId}", &sanitize(&alert.tenant_id))
            .replace("{appId}", &sanitize(alert.app_id.as_deref().unwrap_or("")))
    }

    /// What is published for an alert: its topic and JSON payload.
    fn message(&self, alert: &Alert) -> (String, serde_json::Value) {
        (self.topic_for(alert), alert.payload())
    }

    async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), SinkError> {
        let broker = self.config.broker.display_url();
        let connection = ConfirmedPublisher::start(&self.connector);
        connection
            .publish(topic, payload, self.config.retain, self.config.timeout)
            .await
            .map_err(|e| match e {
                PublishError::Connection(reason) => {
                    SinkError::Transient(format!("MQTT {broker}: {reason}"))
                }
                PublishError::Timeout(timeout) => {
                    SinkError::Transient(format!("MQTT {broker}: no PUBACK within {timeout:?}"))
                }
                // MQTT 5 brokers can refuse a publish in its PUBACK (e.g. not authorized).
                PublishError::Refused(reason) => {
                    SinkError::Permanent(format!("MQTT {broker}: publish refused: {reason}"))
                }
            })?;
        connection.disconnect().await;
        Ok(())
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        MQTT_SINK
    }

    fn rate_limit(&self) -> Duration {
        self.config.rate_limit
    }

    fn digest(&self) -> Option<DigestSettings> {
        self.config.digest
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let (topic, payload) = self.message(alert);
        let payload = serde_json::to_vec(&payload)
            .map_err(|e| SinkError::Permanent(format!("alert does not serialize: {e}")))?;
        let _one_at_a_time = self.busy.lock().await;
        self.publish(&topic, &payload).await
    }

    /// The topic and payload, without connecting.
    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        let (topic, payload) = self.message(alert);
        Ok(Preview::Mqtt {
            topic,
            retain: self.config.retain,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_notices() {
        let sink = MqttSink::new(MqttSinkConfig {
            broker: qlik_events::BrokerSettings::new("127.0.0.1", 1883, "t"),
            topic: "qscloud/{tenantId}".into(),
            retain: false,
            rate_limit: Duration::ZERO,
            timeout: Duration::from_secs(1),
            digest: None,
        })
        .expect("sink");
        let notice = Alert::sample_notice();
        assert!(!sink.accepts(&notice));
        let mut reload = notice;
        reload.notice = None;
        assert!(sink.accepts(&reload));
    }
}
