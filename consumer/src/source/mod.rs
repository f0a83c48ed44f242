//! Source: Qlik events from the MQTT broker, at least once.
//!
//! - QoS 1 subscription in a persistent session: a fixed client id with clean session off
//!   (MQTT 3.1.1) or a session expiry (MQTT 5), so the broker keeps what is published while the
//!   consumer is down.
//! - Manual acknowledgements: each [`Message`] carries its PUBACK, sent by [`Message::ack`]
//!   only once the pipeline has handled the event. A consumer killed before that gets the
//!   message again from the broker.
//! - Reconnects with capped exponential backoff; subscribes again whenever the broker did not
//!   resume the session (CONNACK `session_present` false).
//!
//! The MQTT event loop runs in its own task and never waits on the pipeline, so keep-alives
//! continue while an alert is being delivered slowly. The channel to the pipeline is unbounded
//! in type but bounded in practice by the broker's in-flight window: without acknowledgements
//! it sends no more than that.

mod backoff;
mod v311;
mod v5;

use std::time::Duration;

use bytes::Bytes;
use qlik_events::{BrokerSettings, MqttVersion};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use backoff::Backoff;

use crate::config::ConsumerConfig;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("broker settings refused: {0}")]
    Settings(#[from] qlik_events::BrokerError),
    #[error("the broker refused the subscription to `{filter}`: {reason}")]
    SubscriptionRefused { filter: String, reason: String },
    #[error("cannot acknowledge message: the MQTT client has stopped")]
    AckFailed,
}

/// How to reach the broker and what to subscribe to.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub broker: BrokerSettings,
    /// MQTT 3.1.1 clean session; false keeps the session on the broker.
    pub clean_session: bool,
    /// MQTT 5 session expiry; `None` ends the session with the connection.
    pub session_expiry: Option<Duration>,
    /// Topic filter, possibly `$share/<group>/<filter>` (MQTT 5).
    pub filter: String,
    pub backoff: Backoff,
}

impl SourceConfig {
    pub fn from_config(config: &ConsumerConfig) -> Self {
        Self {
            broker: config.broker.broker_settings(),
            clean_session: config.broker.clean_session,
            session_expiry: config.broker.session_expiry_v5(),
            filter: config.topics.subscription_filter(),
            backoff: Backoff::default(),
        }
    }
}

enum Acker {
    V311(rumqttc::AsyncClient, rumqttc::Publish),
    V5(
        rumqttc::v5::AsyncClient,
        rumqttc::v5::mqttbytes::v5::Publish,
    ),
}

/// One received message. Dropping it without [`Message::ack`] leaves it unacknowledged: the
/// broker sends it again on the next connection.
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    /// The broker marked it as a redelivery (DUP).
    pub redelivered: bool,
    acker: Acker,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("bytes", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .finish()
    }
}

impl Message {
    /// Sends the PUBACK. Call only after the event was handled.
    pub async fn ack(self) -> Result<(), SourceError> {
        let sent = match self.acker {
            Acker::V311(client, publish) => client.ack(&publish).await.is_ok(),
            Acker::V5(client, publish) => client.ack(&publish).await.is_ok(),
        };
        if sent {
            Ok(())
        } else {
            Err(SourceError::AckFailed)
        }
    }
}

pub(crate) enum SourceEvent {
    Message(Box<Message>),
    /// The broker granted the subscription.
    Subscribed,
    Fatal(SourceError),
}

/// What [`Source::next`] yields besides messages.
#[derive(Debug)]
pub enum Received {
    Message(Box<Message>),
    /// The broker granted the subscription (after the first connection, or after a reconnect
    /// that did not resume the session).
    Subscribed,
}

/// A running subscription.
pub struct Source {
    rx: mpsc::UnboundedReceiver<SourceEvent>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Source {
    /// Starts connecting in the background. Certificate and key files are read here, so a bad
    /// TLS setting fails now rather than on every reconnect.
    pub fn start(config: SourceConfig) -> Result<Source, SourceError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let task = match config.broker.version {
            MqttVersion::V311 => v311::spawn(&config, tx, stopped)?,
            MqttVersion::V5 => v5::spawn(&config, tx, stopped)?,
        };
        Ok(Source { rx, stop, task })
    }

    /// The next message or notice; `None` once stopped.
    pub async fn next(&mut self) -> Option<Result<Received, SourceError>> {
        match self.rx.recv().await? {
            SourceEvent::Message(m) => Some(Ok(Received::Message(m))),
            SourceEvent::Subscribed => Some(Ok(Received::Subscribed)),
            SourceEvent::Fatal(e) => Some(Err(e)),
        }
    }

    /// Disconnects cleanly. Unacknowledged messages stay with the broker.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Logs a connection failure without flooding: the first failure and every tenth after it at
/// warn, the rest at debug.
pub(crate) fn log_connection_error(
    broker: &str,
    failures: u32,
    error: &dyn std::fmt::Display,
    delay: Duration,
) {
    if failures == 1 || failures.is_multiple_of(10) {
        tracing::warn!(
            broker,
            failures,
            "MQTT connection failed: {error}; retrying in {delay:?}"
        );
    } else {
        tracing::debug!(
            broker,
            failures,
            "MQTT connection failed: {error}; retrying in {delay:?}"
        );
    }
}
