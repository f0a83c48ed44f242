//! One MQTT client for both protocol versions. rumqttc has a separate client, event loop and
//! packet type for MQTT 3.1.1 and for MQTT 5; the relay, the consumer and their tests need the
//! same few things from either (connect, publish with QoS 1, subscribe, acknowledge by hand, and
//! the events that answer them), so the fork between the two is written here once.
//!
//! [`confirmed`] builds on it: publish and return only once the broker acknowledged *that*
//! message.

pub mod confirmed;

use std::time::Duration;

use bytes::Bytes;
use rumqttc::Outgoing;
use rumqttc::v5::mqttbytes::v5 as v5_packets;

use crate::broker::{BrokerError, BrokerSettings, MqttVersion};

pub use confirmed::{ConfirmedPublisher, LinkState, PublishError};

/// What the broker keeps of this client between connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    /// MQTT 3.1.1 clean session; false keeps the session (and queued QoS 1 messages) on the
    /// broker.
    pub clean_session: bool,
    /// MQTT 5 session expiry; `None` ends the session with the connection.
    pub expiry: Option<Duration>,
}

impl Session {
    /// Nothing is kept: the session ends with the connection.
    pub const CLEAN: Session = Session {
        clean_session: true,
        expiry: None,
    };
}

/// How a client is opened.
#[derive(Debug, Clone, Copy)]
pub struct ClientOptions {
    pub session: Session,
    /// Incoming QoS 1 messages are acknowledged only by [`Ack::send`], not on arrival.
    pub manual_acks: bool,
    /// Requests (publish, subscribe, ack) that may wait for the event loop at once.
    pub request_queue: usize,
    /// MQTT 5 receive maximum: QoS 1 messages the broker may send before this client
    /// acknowledged them. `None`: the protocol's default (65,535). MQTT 3.1.1 has no such
    /// setting; there the broker's own in-flight limit bounds it.
    pub receive_maximum: Option<u16>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            session: Session::CLEAN,
            manual_acks: false,
            request_queue: 16,
            receive_maximum: None,
        }
    }
}

/// The request side of a connection: cheap to clone, usable from any task.
#[derive(Clone)]
pub enum MqttClient {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The connection itself: nothing happens (not even connecting) unless it is polled.
pub struct MqttEventLoop(EventLoop);

/// Each event loop keeps a client of its own to attach acknowledgements to incoming messages.
enum EventLoop {
    V311 {
        eventloop: Box<rumqttc::EventLoop>,
        client: rumqttc::AsyncClient,
    },
    V5 {
        eventloop: Box<rumqttc::v5::EventLoop>,
        client: rumqttc::v5::AsyncClient,
    },
}

/// A request could not be handed to the event loop (it has stopped, or its queue is full).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(String);

/// The connection failed; polling again reconnects.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ConnectionError {
    message: String,
    refused: Option<String>,
}

impl ConnectionError {
    /// The broker's CONNACK return code (`NotAuthorized`, `BadUserNamePassword`, …) when it
    /// refused the connection; `None` for transport and protocol failures.
    pub fn connack_refusal(&self) -> Option<&str> {
        self.refused.as_deref()
    }
}

/// One thing that happened on the connection, the same for both protocol versions.
#[derive(Debug)]
pub enum MqttEvent {
    ConnAck {
        /// The broker resumed this client id's session (its subscriptions are still there).
        session_present: bool,
    },
    /// Per requested filter: granted, or refused with the broker's reason.
    SubAck(Vec<Result<(), String>>),
    UnsubAck,
    Publish(Box<IncomingPublish>),
    PubAck(PubAck),
    /// Any other packet from the broker (PINGRESP, …): the connection is alive.
    OtherIncoming,
    /// A PUBLISH left with this packet id. Requests leave in the order they were queued.
    PublishSent(u16),
    /// The DISCONNECT left: the connection is over.
    DisconnectSent,
    OtherOutgoing,
}

impl MqttEvent {
    /// Whether the broker sent something (as opposed to a packet leaving).
    pub fn is_inbound(&self) -> bool {
        !matches!(
            self,
            MqttEvent::PublishSent(_) | MqttEvent::DisconnectSent | MqttEvent::OtherOutgoing
        )
    }
}

/// The broker's answer to one of our QoS 1 publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PubAck {
    pub pkid: u16,
    /// MQTT 5 reason code (`Success`, `NoMatchingSubscribers`, `NotAuthorized`, …); MQTT 3.1.1
    /// has none.
    pub reason: Option<String>,
    accepted: bool,
}

impl PubAck {
    /// `Err(reason)` when the broker refused the message (MQTT 5 brokers can, e.g. not
    /// authorized). "No matching subscribers" still means the broker took it.
    pub fn outcome(&self) -> Result<(), String> {
        if self.accepted {
            Ok(())
        } else {
            Err(self.reason.clone().unwrap_or_default())
        }
    }
}

/// A message from the broker. With manual acknowledgements, dropping it without
/// [`Ack::send`] leaves it unacknowledged: the broker sends it again on the next connection.
pub struct IncomingPublish {
    pub topic: String,
    pub payload: Bytes,
    pub ack: Ack,
}

impl std::fmt::Debug for IncomingPublish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingPublish")
            .field("topic", &self.topic)
            .field("bytes", &self.payload.len())
            .finish()
    }
}

/// The PUBACK for one received message, ready to send.
pub struct Ack(AckFor);

enum AckFor {
    V311(rumqttc::AsyncClient, rumqttc::Publish),
    V5(rumqttc::v5::AsyncClient, v5_packets::Publish),
}

impl Ack {
    pub async fn send(self) -> Result<(), RequestError> {
        match self.0 {
            AckFor::V311(client, publish) => request(client.ack(&publish).await),
            AckFor::V5(client, publish) => request(client.ack(&publish).await),
        }
    }
}

const QOS1_V311: rumqttc::QoS = rumqttc::QoS::AtLeastOnce;
const QOS1_V5: rumqttc::v5::mqttbytes::QoS = rumqttc::v5::mqttbytes::QoS::AtLeastOnce;

/// Connection options checked once (certificates and keys read), from which any number of
/// connections can be opened.
#[derive(Clone)]
pub enum Connector {
    V311 {
        options: Box<rumqttc::MqttOptions>,
        request_queue: usize,
    },
    V5 {
        options: Box<rumqttc::v5::MqttOptions>,
        request_queue: usize,
    },
}

impl Connector {
    /// Options for `settings.version`. Certificate and key files are read here, so a bad TLS
    /// setting fails now rather than on every (re)connect.
    pub fn new(settings: &BrokerSettings, options: ClientOptions) -> Result<Self, BrokerError> {
        let request_queue = options.request_queue;
        Ok(match settings.version {
            MqttVersion::V311 => {
                let mut mqtt = settings.mqtt_options(options.session.clean_session)?;
                mqtt.set_manual_acks(options.manual_acks);
                Connector::V311 {
                    options: Box::new(mqtt),
                    request_queue,
                }
            }
            MqttVersion::V5 => {
                let mut mqtt = settings.mqtt_options_v5(options.session.expiry)?;
                mqtt.set_manual_acks(options.manual_acks);
                if options.receive_maximum.is_some() {
                    mqtt.set_receive_maximum(options.receive_maximum);
                }
                Connector::V5 {
                    options: Box::new(mqtt),
                    request_queue,
                }
            }
        })
    }

    /// A new client and its connection (which connects once polled).
    pub fn open(&self) -> (MqttClient, MqttEventLoop) {
        match self {
            Connector::V311 {
                options,
                request_queue,
            } => {
                let (client, eventloop) =
                    rumqttc::AsyncClient::new(options.as_ref().clone(), *request_queue);
                (
                    MqttClient::V311(client.clone()),
                    MqttEventLoop(EventLoop::V311 {
                        eventloop: Box::new(eventloop),
                        client,
                    }),
                )
            }
            Connector::V5 {
                options,
                request_queue,
            } => {
                let (client, eventloop) =
                    rumqttc::v5::AsyncClient::new(options.as_ref().clone(), *request_queue);
                (
                    MqttClient::V5(client.clone()),
                    MqttEventLoop(EventLoop::V5 {
                        eventloop: Box::new(eventloop),
                        client,
                    }),
                )
            }
        }
    }
}

impl MqttClient {
    /// A client for `settings.version`, ready to connect (see [`Connector::new`]).
    pub fn new(
        settings: &BrokerSettings,
        options: ClientOptions,
    ) -> Result<(MqttClient, MqttEventLoop), BrokerError> {
        Ok(Connector::new(settings, options)?.open())
    }

    /// Queues a QoS 1 PUBLISH, waiting while the request queue is full.
    pub async fn publish_qos1(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), RequestError> {
        match self {
            MqttClient::V311(c) => request(c.publish(topic, QOS1_V311, retain, payload).await),
            MqttClient::V5(c) => request(c.publish(topic, QOS1_V5, retain, payload).await),
        }
    }

    /// Queues a QoS 1 PUBLISH without waiting: fails when the request queue is full.
    pub fn try_publish_qos1(
        &self,
        topic: &str,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<(), RequestError> {
        match self {
            MqttClient::V311(c) => request(c.try_publish(topic, QOS1_V311, retain, payload)),
            MqttClient::V5(c) => request(c.try_publish(topic, QOS1_V5, retain, payload)),
        }
    }

    /// Queues a SUBSCRIBE with QoS 1; the answer is an [`MqttEvent::SubAck`].
    pub async fn subscribe_qos1(&self, filter: &str) -> Result<(), RequestError> {
        match self {
            MqttClient::V311(c) => request(c.subscribe(filter, QOS1_V311).await),
            MqttClient::V5(c) => request(c.subscribe(filter, QOS1_V5).await),
        }
    }

    /// Queues an UNSUBSCRIBE; the answer is an [`MqttEvent::UnsubAck`].
    pub async fn unsubscribe(&self, filter: &str) -> Result<(), RequestError> {
        match self {
            MqttClient::V311(c) => request(c.unsubscribe(filter).await),
            MqttClient::V5(c) => request(c.unsubscribe(filter).await),
        }
    }

    /// Queues a clean DISCONNECT (a persistent session stays on the broker).
    pub async fn disconnect(&self) -> Result<(), RequestError> {
        match self {
            MqttClient::V311(c) => request(c.disconnect().await),
            MqttClient::V5(c) => request(c.disconnect().await),
        }
    }
}

fn request<E: std::fmt::Display>(result: Result<(), E>) -> Result<(), RequestError> {
    result.map_err(|e| RequestError(e.to_string()))
}

impl MqttEventLoop {
    /// Sends a clean DISCONNECT through `client` and drives the connection until it has left,
    /// or `within` has passed, or the connection failed: a persistent session stays on the
    /// broker whichever comes first. Events that arrive meanwhile are dropped (unacknowledged,
    /// so the broker keeps any message among them).
    pub async fn disconnect(&mut self, client: &MqttClient, within: Duration) {
        if client.disconnect().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(within, async {
            loop {
                match self.poll().await {
                    Ok(MqttEvent::DisconnectSent) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }

    /// Drives the connection to its next event. After an error, the next call reconnects.
    pub async fn poll(&mut self) -> Result<MqttEvent, ConnectionError> {
        match &mut self.0 {
            EventLoop::V311 { eventloop, client } => match eventloop.poll().await {
                Ok(event) => Ok(event_v311(event, client)),
                Err(e) => Err(ConnectionError {
                    refused: match &e {
                        rumqttc::ConnectionError::ConnectionRefused(code) => {
                            Some(format!("{code:?}"))
                        }
                        _ => None,
                    },
                    message: e.to_string(),
                }),
            },
            EventLoop::V5 { eventloop, client } => match eventloop.poll().await {
                Ok(event) => Ok(event_v5(event, client)),
                Err(e) => Err(ConnectionError {
                    refused: match &e {
                        rumqttc::v5::ConnectionError::ConnectionRefused(code) => {
                            Some(format!("{code:?}"))
                        }
                        _ => None,
                    },
                    message: e.to_string(),
                }),
            },
        }
    }
}

fn outgoing(packet: Outgoing) -> MqttEvent {
    match packet {
        Outgoing::Publish(pkid) => MqttEvent::PublishSent(pkid),
        Outgoing::Disconnect => MqttEvent::DisconnectSent,
        _ => MqttEvent::OtherOutgoing,
    }
}

/// MQTT 3.1.1 SUBACK says only "failure", without a reason.
const SUBACK_FAILURE_V311: &str = "SUBACK failure (not authorized, or invalid filter)";

fn connack(session_present: bool) -> MqttEvent {
    MqttEvent::ConnAck { session_present }
}

/// A SUBACK of either protocol version: one verdict per filter asked for.
fn suback<C>(codes: &[C], verdict: impl Fn(&C) -> Result<(), String>) -> MqttEvent {
    MqttEvent::SubAck(codes.iter().map(verdict).collect())
}

fn event_v311(event: rumqttc::Event, client: &rumqttc::AsyncClient) -> MqttEvent {
    use rumqttc::{Event, Packet, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(ack)) => connack(ack.session_present),
        Event::Incoming(Packet::SubAck(ack)) => suback(&ack.return_codes, |code| match code {
            SubscribeReasonCode::Success(_) => Ok(()),
            SubscribeReasonCode::Failure => Err(SUBACK_FAILURE_V311.to_owned()),
        }),
        Event::Incoming(Packet::UnsubAck(_)) => MqttEvent::UnsubAck,
        Event::Incoming(Packet::Publish(publish)) => {
            MqttEvent::Publish(Box::new(IncomingPublish {
                topic: publish.topic.clone(),
                payload: publish.payload.clone(),
                ack: Ack(AckFor::V311(client.clone(), publish)),
            }))
        }
        Event::Incoming(Packet::PubAck(ack)) => MqttEvent::PubAck(PubAck {
            pkid: ack.pkid,
            reason: None,
            accepted: true,
        }),
        Event::Incoming(_) => MqttEvent::OtherIncoming,
        Event::Outgoing(packet) => outgoing(packet),
    }
}

fn event_v5(event: rumqttc::v5::Event, client: &rumqttc::v5::AsyncClient) -> MqttEvent {
    use rumqttc::v5::Event;
    use v5_packets::{Packet, PubAckReason, SubscribeReasonCode};
    match event {
        Event::Incoming(Packet::ConnAck(ack)) => connack(ack.session_present),
        Event::Incoming(Packet::SubAck(ack)) => suback(&ack.return_codes, |code| match code {
            SubscribeReasonCode::Success(_) => Ok(()),
            refused => Err(format!("{refused:?}")),
        }),
        Event::Incoming(Packet::UnsubAck(_)) => MqttEvent::UnsubAck,
        Event::Incoming(Packet::Publish(publish)) => {
            MqttEvent::Publish(Box::new(IncomingPublish {
                topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                payload: publish.payload.clone(),
                ack: Ack(AckFor::V5(client.clone(), publish)),
            }))
        }
        Event::Incoming(Packet::PubAck(ack)) => MqttEvent::PubAck(PubAck {
            pkid: ack.pkid,
            reason: Some(format!("{:?}", ack.reason)),
            accepted: matches!(
                ack.reason,
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers
            ),
        }),
        Event::Incoming(_) => MqttEvent::OtherIncoming,
        Event::Outgoing(packet) => outgoing(packet),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer bounds what an MQTT 5 broker pushes before it acknowledged anything; the
    /// session expiry set beside it must survive.
    #[test]
    fn the_receive_maximum_is_announced_with_mqtt_5_only() {
        let settings =
            BrokerSettings::from_url("mqtt://127.0.0.1:1883?version=5", "c").expect("settings");
        let options = ClientOptions {
            session: Session {
                clean_session: false,
                expiry: Some(Duration::from_secs(3600)),
            },
            manual_acks: true,
            request_queue: 16,
            receive_maximum: Some(8),
        };
        let Connector::V5 { options: v5, .. } =
            Connector::new(&settings, options).expect("connector")
        else {
            panic!("MQTT 5 expected")
        };
        assert_eq!(v5.receive_maximum(), Some(8));
        assert_eq!(v5.session_expiry_interval(), Some(3600));
        let Connector::V5 { options: v5, .. } = Connector::new(
            &settings,
            ClientOptions {
                receive_maximum: None,
                ..options
            },
        )
        .expect("connector") else {
            panic!("MQTT 5 expected")
        };
        assert_eq!(v5.receive_maximum(), None, "the protocol's default");
    }
}
