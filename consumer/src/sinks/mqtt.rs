//! MQTT re-publish (extension `Butler.qlikSenseCloud.consumer.destinations.mqtt`): the alert as
//! JSON ([`Alert::payload`]) on `topic` (default `qscloud-alerts/{tenantId}/{appId}`), QoS 1, on
//! the consumer's broker. A send counts as delivered only when the broker acknowledged that
//! very publish (PUBACK with its packet id).
//!
//! Each send uses its own short connection with client id `<clientId>-alerts` and a clean
//! session: alerts are rare, and sharing the subscriber's connection would tie delivery to the
//! subscription's manual acknowledgements.

use std::sync::Arc;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::sync::Mutex;

use super::{BuildError, Destination, Kind, SharedSink, Sink, SinkError};
use crate::alert::Alert;
use crate::config::{ConsumerConfig, Node, Problems, block_enabled, rate_limit};

pub(crate) const KIND: Kind = Kind::Global(parse);

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
    })]
}

impl Destination for MqttDestination {
    fn summary(&self, _config: &ConsumerConfig) -> Option<String> {
        let retained = if self.retain { " (retained)" } else { "" };
        Some(format!("MQTT re-publish to {}{retained}", self.topic))
    }

    fn build(
        &self,
        config: &ConsumerConfig,
        _client: &reqwest::Client,
    ) -> Result<SharedSink, BuildError> {
        let settings = MqttSinkConfig::from_config(config, self);
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
}

impl MqttSinkConfig {
    pub fn from_config(config: &ConsumerConfig, mqtt: &MqttDestination) -> Self {
        let mut broker = config.broker.broker_settings();
        broker.client_id = format!("{}-alerts", config.broker.client_id);
        Self {
            broker,
            topic: mqtt.topic.clone(),
            retain: mqtt.retain,
            rate_limit: mqtt.rate_limit,
            timeout: Duration::from_secs(10),
        }
    }
}

/// The sink speaks the broker's configured MQTT version: brokers such as rumqttd serve 3.1.1
/// and 5 on different ports.
enum Options {
    V311(Box<rumqttc::MqttOptions>),
    V5(Box<rumqttc::v5::MqttOptions>),
}

pub struct MqttSink {
    config: MqttSinkConfig,
    options: Options,
    /// One connection at a time: they share a client id.
    busy: Mutex<()>,
}

impl MqttSink {
    pub fn new(config: MqttSinkConfig) -> Result<Self, BuildError> {
        let refused = |e: qlik_events::BrokerError| BuildError::Mqtt(e.to_string());
        let options = match config.broker.version {
            qlik_events::MqttVersion::V311 => {
                Options::V311(Box::new(config.broker.mqtt_options(true).map_err(refused)?))
            }
            qlik_events::MqttVersion::V5 => Options::V5(Box::new(
                config.broker.mqtt_options_v5(None).map_err(refused)?,
            )),
        };
        Ok(Self {
            config,
            options,
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

    async fn publish(&self, topic: String, payload: Vec<u8>) -> Result<(), SinkError> {
        match &self.options {
            Options::V311(options) => self.publish_v311(options, topic, payload).await,
            Options::V5(options) => self.publish_v5(options, topic, payload).await,
        }
    }

    fn broker_error(&self, error: &dyn std::fmt::Display) -> SinkError {
        SinkError::Transient(format!(
            "MQTT {}: {error}",
            self.config.broker.display_url()
        ))
    }

    async fn publish_v311(
        &self,
        options: &rumqttc::MqttOptions,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), SinkError> {
        let (client, mut eventloop) = AsyncClient::new(options.clone(), 4);
        client
            .publish(topic, QoS::AtLeastOnce, self.config.retain, payload)
            .await
            .map_err(|e| SinkError::Permanent(format!("MQTT publish refused: {e}")))?;
        let mut our_packet = None;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => our_packet = Some(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == our_packet => break,
                Ok(_) => {}
                Err(e) => return Err(self.broker_error(&e)),
            }
        }
        let _ = client.disconnect().await;
        // Let the DISCONNECT go out; the connection is dropped either way.
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        Ok(())
    }

    async fn publish_v5(
        &self,
        options: &rumqttc::v5::MqttOptions,
        topic: String,
        payload: Vec<u8>,
    ) -> Result<(), SinkError> {
        use rumqttc::v5::mqttbytes::v5::{Packet as Packet5, PubAckReason};
        let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options.clone(), 4);
        client
            .publish(
                topic,
                rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                self.config.retain,
                payload,
            )
            .await
            .map_err(|e| SinkError::Permanent(format!("MQTT publish refused: {e}")))?;
        let mut our_packet = None;
        loop {
            match eventloop.poll().await {
                Ok(rumqttc::v5::Event::Outgoing(Outgoing::Publish(pkid))) => {
                    our_packet = Some(pkid)
                }
                Ok(rumqttc::v5::Event::Incoming(Packet5::PubAck(ack)))
                    if Some(ack.pkid) == our_packet =>
                {
                    // MQTT 5 brokers can refuse a publish in its PUBACK (e.g. not authorized).
                    if matches!(
                        ack.reason,
                        PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                    ) {
                        break;
                    }
                    return Err(SinkError::Permanent(format!(
                        "MQTT {}: publish refused: {:?}",
                        self.config.broker.display_url(),
                        ack.reason
                    )));
                }
                Ok(_) => {}
                Err(e) => return Err(self.broker_error(&e)),
            }
        }
        let _ = client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        Ok(())
    }
}

impl Sink for MqttSink {
    fn name(&self) -> &str {
        "mqtt"
    }

    fn rate_limit(&self) -> Duration {
        self.config.rate_limit
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let payload = serde_json::to_vec(&alert.payload())
            .map_err(|e| SinkError::Permanent(format!("alert does not serialize: {e}")))?;
        let topic = self.topic_for(alert);
        let _one_at_a_time = self.busy.lock().await;
        tokio::time::timeout(self.config.timeout, self.publish(topic, payload))
            .await
            .unwrap_or_else(|_| {
                Err(SinkError::Transient(format!(
                    "MQTT {}: no PUBACK within {:?}",
                    self.config.broker.display_url(),
                    self.config.timeout
                )))
            })
    }
}
