//! Publishes with QoS 1 and returns only once the broker acknowledged *that* message.
//!
//! rumqttc's `publish()` only queues a request; the packet id is assigned later by its event
//! loop. Requests leave the queue in order and each produces one [`MqttEvent::PublishSent`], so
//! a FIFO of waiters, filled under the same lock that queues the request, maps each request to
//! its packet id; the PUBACK with that id then completes exactly that waiter.
//!
//! A connection is never reconnected in place: when it fails, every waiter on it is failed and
//! the connection is finished; the caller opens a fresh one. Resuming in place would leave
//! requests queued during the outage without a waiter to match them, which could confirm the
//! wrong message. Being strict here costs one reconnect; confirming a message the broker never
//! got would lose an alert.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::{ClientOptions, ConnectionError, Connector, MqttClient, MqttEvent, Session};
use crate::broker::{BrokerError, BrokerSettings};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("broker connection failed: {0}")]
    Connection(String),
    #[error("no PUBACK within {0:?}")]
    Timeout(Duration),
    #[error("broker refused the message: {0}")]
    Refused(String),
}

type Waiter = oneshot::Sender<Result<(), PublishError>>;

/// Where one connection stands, as its event loop last reported it. A connection goes from
/// `Connecting` to `Connected` (the broker's CONNACK) and ends `Down`; it never comes back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum LinkState {
    /// Opened; the broker has not accepted the CONNECT yet.
    #[default]
    Connecting,
    /// The broker accepted the connection.
    Connected,
    /// The connection failed or was closed. `refused`: the broker's CONNACK code when it
    /// refused the client (`NotAuthorized`, `BadUserNamePassword`, …).
    Down {
        error: PublishError,
        refused: Option<String>,
    },
}

#[derive(Default)]
struct Waiters {
    dead: Option<PublishError>,
    /// Queued requests that have not been given a packet id yet, oldest first.
    queued: VecDeque<Waiter>,
    /// Sent messages awaiting their PUBACK, by packet id.
    sent: HashMap<u16, Waiter>,
    last_inbound: Option<Instant>,
    link: watch::Sender<LinkState>,
}

impl Waiters {
    fn fail_all(&mut self, error: PublishError, refused: Option<String>) {
        if !matches!(*self.link.borrow(), LinkState::Down { .. }) {
            self.link.send_replace(LinkState::Down {
                error: error.clone(),
                refused,
            });
        }
        for waiter in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, w)| w))
        {
            let _ = waiter.send(Err(error.clone()));
        }
        self.dead = Some(error);
    }

    /// Applies one event-loop result; returns false when the connection is finished.
    fn apply(&mut self, event: Result<MqttEvent, ConnectionError>) -> bool {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                let refused = error.connack_refusal().map(str::to_owned);
                self.fail_all(PublishError::Connection(error.to_string()), refused);
                return false;
            }
        };
        if event.is_inbound() {
            self.last_inbound = Some(Instant::now());
        }
        match event {
            MqttEvent::ConnAck { .. } => {
                self.link.send_replace(LinkState::Connected);
            }
            MqttEvent::PublishSent(pkid) => {
                if let Some(waiter) = self.queued.pop_front() {
                    self.sent.insert(pkid, waiter);
                }
            }
            MqttEvent::PubAck(ack) => {
                if let Some(waiter) = self.sent.remove(&ack.pkid) {
                    let _ = waiter.send(ack.outcome().map_err(PublishError::Refused));
                }
            }
            MqttEvent::DisconnectSent => {
                self.fail_all(PublishError::Connection("disconnected".to_owned()), None);
                return false;
            }
            _ => {}
        }
        true
    }
}

fn lock(waiters: &Mutex<Waiters>) -> MutexGuard<'_, Waiters> {
    // A panic while holding this lock cannot leave it inconsistent in a way that matters more
    // than losing the publisher, so poisoning is ignored.
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}

/// One clean-session broker connection whose event loop runs in its own task, and whose
/// publishes each wait for their own PUBACK.
pub struct ConfirmedPublisher {
    client: MqttClient,
    waiters: Arc<Mutex<Waiters>>,
    driver: JoinHandle<()>,
}

impl ConfirmedPublisher {
    /// Starts connecting in the background with a clean session (call inside a Tokio
    /// runtime). `request_queue` publishes may wait for the event loop at once; beyond it a
    /// publish fails.
    pub fn connect(settings: &BrokerSettings, request_queue: usize) -> Result<Self, BrokerError> {
        Ok(Self::start(&Self::connector(settings, request_queue)?))
    }

    /// Options for [`ConfirmedPublisher::start`], checked once for many connections.
    pub fn connector(
        settings: &BrokerSettings,
        request_queue: usize,
    ) -> Result<Connector, BrokerError> {
        Connector::new(
            settings,
            ClientOptions {
                session: Session::CLEAN,
                manual_acks: false,
                request_queue,
                receive_maximum: None,
            },
        )
    }

    /// Starts connecting in the background (call inside a Tokio runtime).
    pub fn start(connector: &Connector) -> Self {
        let (client, mut eventloop) = connector.open();
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let shared = waiters.clone();
        let driver = tokio::spawn(async move {
            loop {
                let event = eventloop.poll().await;
                if !lock(&shared).apply(event) {
                    break;
                }
            }
        });
        Self {
            client,
            waiters,
            driver,
        }
    }

    /// The connection failed or was closed: every later publish fails at once.
    pub fn is_dead(&self) -> bool {
        lock(&self.waiters).dead.is_some()
    }

    /// The connection's state now.
    pub fn link_state(&self) -> LinkState {
        lock(&self.waiters).link.borrow().clone()
    }

    /// Follows the connection's state: `changed()` wakes when the broker accepts it and when it
    /// goes down.
    pub fn link(&self) -> watch::Receiver<LinkState> {
        lock(&self.waiters).link.subscribe()
    }

    /// How long ago the broker last sent anything; `None` before it sent something.
    pub fn silent_for(&self) -> Option<Duration> {
        lock(&self.waiters).last_inbound.map(|t| t.elapsed())
    }

    /// Publishes with QoS 1 and waits up to `timeout` for the broker's PUBACK of this message.
    pub async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.waiters);
            if let Some(error) = &waiters.dead {
                return Err(error.clone());
            }
            if self
                .client
                .try_publish_qos1(topic, payload.to_vec(), retain)
                .is_err()
            {
                // Full (a burst beyond the queue) or closed (the event loop ended): either way
                // this connection cannot take the message now.
                return Err(PublishError::Connection(
                    "request queue full or closed".into(),
                ));
            }
            waiters.queued.push_back(tx);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PublishError::Connection("connection closed".into())),
            Err(_) => Err(PublishError::Timeout(timeout)),
        }
    }

    /// Fails every waiting publish with `reason` and stops the connection without a goodbye.
    pub fn close(&self, reason: &str) {
        lock(&self.waiters).fail_all(PublishError::Connection(reason.to_owned()), None);
        self.driver.abort();
    }

    /// Sends a clean DISCONNECT and gives it a moment to leave; the connection ends either way.
    pub async fn disconnect(mut self) {
        let _ = self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut self.driver).await;
    }
}

impl Drop for ConfirmedPublisher {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::super::PubAck;
    use super::*;

    fn waiter(waiters: &mut Waiters) -> oneshot::Receiver<Result<(), PublishError>> {
        let (tx, rx) = oneshot::channel();
        waiters.queued.push_back(tx);
        rx
    }

    fn puback(pkid: u16, reason: Option<&str>, accepted: bool) -> MqttEvent {
        MqttEvent::PubAck(PubAck {
            pkid,
            reason: reason.map(str::to_owned),
            accepted,
        })
    }

    #[test]
    fn each_puback_completes_the_publish_that_got_its_packet_id() {
        let mut w = Waiters::default();
        let mut first = waiter(&mut w);
        let mut second = waiter(&mut w);
        assert!(w.apply(Ok(MqttEvent::PublishSent(7))));
        assert!(w.apply(Ok(MqttEvent::PublishSent(8))));
        assert!(w.apply(Ok(puback(8, None, true))));
        assert_eq!(second.try_recv(), Ok(Ok(())));
        assert!(first.try_recv().is_err(), "7 is not acknowledged yet");
        assert!(w.apply(Ok(puback(7, Some("NotAuthorized"), false))));
        assert_eq!(
            first.try_recv(),
            Ok(Err(PublishError::Refused("NotAuthorized".into())))
        );
        assert!(w.last_inbound.is_some());
    }

    #[test]
    fn a_failed_connection_fails_every_waiter_and_stays_dead() {
        let mut w = Waiters::default();
        let mut sent = waiter(&mut w);
        assert!(w.apply(Ok(MqttEvent::PublishSent(1))));
        let mut queued = waiter(&mut w);
        let failed = ConnectionError {
            message: "I/O: connection reset".into(),
            refused: None,
        };
        assert!(!w.apply(Err(failed)));
        let expected = PublishError::Connection("I/O: connection reset".into());
        assert_eq!(sent.try_recv(), Ok(Err(expected.clone())));
        assert_eq!(queued.try_recv(), Ok(Err(expected.clone())));
        assert_eq!(w.dead, Some(expected.clone()));
        assert_eq!(
            *w.link.borrow(),
            LinkState::Down {
                error: expected,
                refused: None
            }
        );
    }

    #[test]
    fn the_link_is_up_from_the_connack_until_the_connection_fails() {
        let mut w = Waiters::default();
        let link = w.link.subscribe();
        assert_eq!(*link.borrow(), LinkState::Connecting);
        assert!(w.apply(Ok(MqttEvent::ConnAck {
            session_present: false
        })));
        assert_eq!(*link.borrow(), LinkState::Connected);
        assert!(w.apply(Ok(MqttEvent::OtherIncoming)));
        assert_eq!(*link.borrow(), LinkState::Connected);
        let refused = ConnectionError {
            message: "connection refused: NotAuthorized".into(),
            refused: Some("NotAuthorized".into()),
        };
        assert!(!w.apply(Err(refused)));
        assert_eq!(
            *link.borrow(),
            LinkState::Down {
                error: PublishError::Connection("connection refused: NotAuthorized".into()),
                refused: Some("NotAuthorized".into()),
            }
        );
        // Closing a finished connection keeps the reason it failed for.
        w.fail_all(PublishError::Connection("closed".into()), None);
        assert!(matches!(
            &*link.borrow(),
            LinkState::Down {
                refused: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn outgoing_packets_do_not_count_as_signs_of_life() {
        let mut w = Waiters::default();
        assert!(w.apply(Ok(MqttEvent::OtherOutgoing)));
        assert!(w.last_inbound.is_none());
        assert!(w.apply(Ok(MqttEvent::OtherIncoming)));
        assert!(w.last_inbound.is_some());
    }
}
