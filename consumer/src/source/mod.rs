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
//! The MQTT event loop runs in its own task, so keep-alives continue while alerts are being
//! delivered slowly. The channel to the pipeline is bounded (`concurrency` messages); what the
//! broker may push is bounded too: with MQTT 5 by the receive maximum this client announces
//! (`concurrency`), with MQTT 3.1.1 by the broker's own in-flight window (Mosquitto's
//! `max_inflight_messages`, 20 by default). Should more arrive while the channel is full, the
//! event loop waits for the pipeline, and TCP pushes back on the broker.

mod backoff;
pub mod session;

use std::time::Duration;

use bytes::Bytes;
use qlik_events::BrokerSettings;
use qlik_events::mqtt::{Ack, ClientOptions, MqttClient, MqttEvent, MqttEventLoop, Session};
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
    #[error(
        "the MQTT connection task ended without an error (a bug): stopping so a supervisor restarts the consumer"
    )]
    Ended,
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
    /// Messages in hand at once: the channel's capacity, and the MQTT 5 receive maximum.
    pub window: usize,
    /// The client id is the host-derived default (`qscloud-consumer-<hostname>`), which
    /// changes with the host: named in the warning about a new session.
    pub host_derived_client_id: bool,
}

impl SourceConfig {
    pub fn from_config(config: &ConsumerConfig) -> Self {
        Self {
            broker: config.broker.broker_settings(),
            clean_session: config.broker.clean_session,
            session_expiry: config.broker.session_expiry_v5(),
            filter: config.topics.subscription_filter(),
            backoff: Backoff::default(),
            window: config.consumer.concurrency,
            host_derived_client_id: config.broker.client_id_from_hostname,
        }
    }
}

/// One received message. Dropping it without [`Message::ack`] leaves it unacknowledged: the
/// broker sends it again on the next connection.
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    ack: Ack,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.topic)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

impl Message {
    /// Sends the PUBACK. Call only after the event was handled.
    pub async fn ack(self) -> Result<(), SourceError> {
        self.ack.send().await.map_err(|_| SourceError::AckFailed)
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
    rx: mpsc::Receiver<SourceEvent>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Source {
    /// Starts connecting in the background. Certificate and key files are read here, so a bad
    /// TLS setting fails now rather than on every reconnect.
    pub fn start(config: SourceConfig) -> Result<Source, SourceError> {
        let window = config.window.max(1);
        let (tx, rx) = mpsc::channel(window);
        let (stop, stopped) = watch::channel(false);
        let (client, eventloop) = MqttClient::new(
            &config.broker,
            ClientOptions {
                session: Session {
                    clean_session: config.clean_session,
                    expiry: config.session_expiry,
                },
                manual_acks: true,
                // Room for an acknowledgement of every message in hand, so acknowledging
                // never waits on the event loop.
                request_queue: 2 * window + 16,
                receive_maximum: Some(u16::try_from(window).unwrap_or(u16::MAX)),
            },
        )?;
        let connection = Connection {
            client,
            eventloop,
            new_session_warning: (!config.clean_session).then(|| NewSessionWarning {
                client_id: config.broker.client_id.clone(),
                host_derived: config.host_derived_client_id,
            }),
            broker: config.broker.display_url(),
            filter: config.filter,
            backoff: config.backoff,
            tx,
        };
        let task = tokio::spawn(connection.run(stopped));
        Ok(Source { rx, stop, task })
    }

    /// A source fed by `rx` alone, with no connection behind it (tests).
    #[cfg(test)]
    pub(crate) fn detached(rx: mpsc::Receiver<SourceEvent>) -> Source {
        let (stop, _) = watch::channel(false);
        Source {
            rx,
            stop,
            task: tokio::spawn(async {}),
        }
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

/// The event loop's task: connects, subscribes, hands messages to the pipeline, reconnects.
struct Connection {
    client: MqttClient,
    eventloop: MqttEventLoop,
    /// The broker as a URL without secrets, for logs.
    broker: String,
    filter: String,
    backoff: Backoff,
    tx: mpsc::Sender<SourceEvent>,
    /// Set with a persistent session: what to say when the broker had none.
    new_session_warning: Option<NewSessionWarning>,
}

/// The client id, for the warning that the broker started a new session.
struct NewSessionWarning {
    client_id: String,
    host_derived: bool,
}

impl NewSessionWarning {
    /// The broker kept nothing for this client id before this CONNACK: events published
    /// before it (first start, changed client id, expired session, broker restarted without
    /// persistence) were dropped by the broker, not queued.
    fn log(&self, first: bool) {
        let client_id = self.client_id.as_str();
        let (when, order) = if first {
            (
                "before now",
                " (run `consumer session create` before registering the webhook, so the session exists from the start)",
            )
        } else {
            // The broker lost or expired the session while the consumer was away.
            ("while the consumer was disconnected", "")
        };
        let advice = if self.host_derived {
            "; this client id is derived from the hostname (the default), which changes with the host (containers): set a fixed broker.clientId"
        } else {
            ""
        };
        tracing::warn!(
            client_id,
            "the broker had no session for client id {client_id}: events published {when} were not kept for it{order}{advice}"
        );
    }
}

impl Connection {
    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let broker = self.broker.as_str();
        let filter = self.filter.as_str();
        let mut failures = 0u32;
        let mut subscribed_once = false;
        let mut connected_once = false;
        loop {
            let event = tokio::select! {
                event = self.eventloop.poll() => event,
                _ = stopped.changed() => {
                    // Give the DISCONNECT a moment to leave; the session stays either way.
                    self.eventloop.disconnect(&self.client, Duration::from_millis(300)).await;
                    return;
                }
            };
            match event {
                Ok(MqttEvent::ConnAck { session_present }) => {
                    failures = 0;
                    self.backoff.reset();
                    tracing::info!(broker, session_present, "connected to MQTT broker");
                    crate::metrics::global().set_broker_connected(true);
                    if !session_present && let Some(warning) = &self.new_session_warning {
                        warning.log(!connected_once);
                    }
                    connected_once = true;
                    // A resumed session still holds the subscription; a new one (first start,
                    // expired session, broker restart without persistence) needs it again.
                    if !session_present || !subscribed_once {
                        if let Err(e) = self.client.subscribe_qos1(filter).await {
                            tracing::error!("cannot queue SUBSCRIBE: {e}");
                        }
                        subscribed_once = true;
                    }
                }
                Ok(MqttEvent::SubAck(granted)) => {
                    if let Some(Err(reason)) = granted.into_iter().find(Result::is_err) {
                        let _ = self
                            .tx
                            .send(SourceEvent::Fatal(SourceError::SubscriptionRefused {
                                filter: filter.to_owned(),
                                reason,
                            }))
                            .await;
                        return;
                    }
                    tracing::info!(filter, "subscribed with QoS 1");
                    if self.tx.send(SourceEvent::Subscribed).await.is_err() {
                        return;
                    }
                }
                Ok(MqttEvent::Publish(publish)) => {
                    let message = Message {
                        topic: publish.topic,
                        payload: publish.payload,
                        ack: publish.ack,
                    };
                    // Waits while the pipeline has its window full; stopping still wins.
                    tokio::select! {
                        sent = self.tx.send(SourceEvent::Message(Box::new(message))) => {
                            if sent.is_err() {
                                return;
                            }
                        }
                        _ = stopped.changed() => return,
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    crate::metrics::global().set_broker_connected(false);
                    failures = failures.saturating_add(1);
                    let delay = self.backoff.next_delay();
                    log_connection_error(broker, failures, &error, delay);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        }
    }
}

/// Logs a connection failure without flooding: the first failure and every tenth after it at
/// warn, the rest at debug.
fn log_connection_error(
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
