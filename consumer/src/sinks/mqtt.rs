//! MQTT re-publish (extension `Butler.qlikSenseCloud.consumer.destinations.mqtt`): the alert as
//! JSON ([`Alert::payload`]) on `topic` (default `qscloud/alert/{tenantId}/{appId}`), QoS 1, on
//! the consumer's broker. A send counts as delivered only when the broker acknowledged that
//! very publish (PUBACK with its packet id).
//!
//! Each send uses its own short connection with client id `<clientId>-alerts` and a clean
//! session: alerts are rare, and sharing the subscriber's connection would tie delivery to the
//! subscription's manual acknowledgements.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Outgoing, Packet, QoS};
use tokio::sync::Mutex;

use super::{BuildError, Sink, SinkError};
use crate::alert::Alert;
use crate::config::{ConsumerConfig, MqttDestination};

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

pub struct MqttSink {
    config: MqttSinkConfig,
    options: rumqttc::MqttOptions,
    /// One connection at a time: they share a client id.
    busy: Mutex<()>,
}

impl MqttSink {
    pub fn new(config: MqttSinkConfig) -> Result<Self, BuildError> {
        let options = config
            .broker
            .mqtt_options(true)
            .map_err(|e| BuildError::Mqtt(e.to_string()))?;
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
        let (client, mut eventloop) = AsyncClient::new(self.options.clone(), 4);
        client
            .publish(topic, QoS::AtLeastOnce, self.config.retain, payload)
            .await
            .map_err(|e| SinkError::Permanent(format!("MQTT publish refused: {e}")))?;
        let broker = self.config.broker.display_url();
        let mut our_packet = None;
        let outcome = loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => our_packet = Some(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == our_packet => {
                    break Ok(());
                }
                Ok(_) => {}
                Err(e) => break Err(SinkError::Transient(format!("MQTT {broker}: {e}"))),
            }
        };
        if outcome.is_ok() {
            let _ = client.disconnect().await;
            // Let the DISCONNECT go out; the connection is dropped either way.
            let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
        }
        outcome
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
