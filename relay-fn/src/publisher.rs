//! Publishes with QoS 1 and returns only once the broker acknowledged *that* message.
//!
//! rumqttc's `publish()` only queues a request; the packet id is assigned later by its event
//! loop. Requests leave the queue in order and each produces one `Outgoing::Publish(pkid)`
//! event, so a FIFO of waiters, filled under the same lock that queues the request, maps each
//! request to its packet id; the PUBACK with that id then completes exactly that waiter.
//!
//! A connection is never reconnected in place: when it fails, every waiter on it is failed and
//! the connection is dropped, and the next publish opens a fresh one. Resuming in place would
//! leave requests queued during the outage without a waiter to match them, which could confirm
//! the wrong message. Being strict here costs one reconnect; confirming a message the broker
//! never got would lose an alert.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use qlik_events::{BrokerSettings, MqttVersion};
use rumqttc::QoS;
use tokio::sync::oneshot;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("broker connection failed: {0}")]
    Connection(String),
    #[error("no PUBACK within {0:?}")]
    Timeout(Duration),
    #[error("broker refused the message: {0}")]
    Refused(String),
}

/// Requests that may wait for the event loop at once; beyond it a publish fails (503).
const REQUEST_QUEUE: usize = 1024;

type Waiter = oneshot::Sender<Result<(), PublishError>>;

#[derive(Default)]
struct Waiters {
    dead: Option<PublishError>,
    /// Queued requests that have not been given a packet id yet, oldest first.
    queued: VecDeque<Waiter>,
    /// Sent messages awaiting their PUBACK, by packet id.
    sent: HashMap<u16, Waiter>,
    last_inbound: Option<Instant>,
}

impl Waiters {
    fn fail_all(&mut self, error: PublishError) {
        for waiter in self
            .queued
            .drain(..)
            .chain(self.sent.drain().map(|(_, w)| w))
        {
            let _ = waiter.send(Err(error.clone()));
        }
        self.dead = Some(error);
    }
}

/// What the event loop reported, reduced to what matters for confirmation.
enum LoopEvent {
    Inbound,
    Sent(u16),
    Acked(u16, Result<(), PublishError>),
    Other,
}

#[derive(Clone)]
enum Client {
    V3(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

struct Connection {
    client: Client,
    waiters: Arc<Mutex<Waiters>>,
    driver: tokio::task::JoinHandle<()>,
}

fn lock(waiters: &Mutex<Waiters>) -> MutexGuard<'_, Waiters> {
    // A panic while holding this lock cannot leave it inconsistent in a way that matters more
    // than losing the relay, so poisoning is ignored.
    waiters.lock().unwrap_or_else(|p| p.into_inner())
}

impl Connection {
    fn open(settings: &BrokerSettings) -> Result<Self, PublishError> {
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        let shared = waiters.clone();
        let config_error = |e: qlik_events::BrokerError| PublishError::Connection(e.to_string());
        let (client, driver) = match settings.version {
            MqttVersion::V311 => {
                let options = settings.mqtt_options(true).map_err(config_error)?;
                let (client, mut eventloop) = rumqttc::AsyncClient::new(options, REQUEST_QUEUE);
                let driver = tokio::spawn(async move {
                    loop {
                        let event = eventloop.poll().await.map(classify_v3);
                        if !handle(&shared, event.map_err(|e| e.to_string())) {
                            break;
                        }
                    }
                });
                (Client::V3(client), driver)
            }
            MqttVersion::V5 => {
                let options = settings.mqtt_options_v5(None).map_err(config_error)?;
                let (client, mut eventloop) = rumqttc::v5::AsyncClient::new(options, REQUEST_QUEUE);
                let driver = tokio::spawn(async move {
                    loop {
                        let event = eventloop.poll().await.map(classify_v5);
                        if !handle(&shared, event.map_err(|e| e.to_string())) {
                            break;
                        }
                    }
                });
                (Client::V5(client), driver)
            }
        };
        Ok(Self {
            client,
            waiters,
            driver,
        })
    }

    fn is_dead(&self) -> bool {
        lock(&self.waiters).dead.is_some()
    }

    /// True when nothing came from the broker for longer than the keep-alive allows: the
    /// process was most likely frozen (Lambda between invocations) and the socket is stale.
    fn is_stale(&self, keep_alive: Duration) -> bool {
        lock(&self.waiters)
            .last_inbound
            .is_some_and(|t| t.elapsed() > keep_alive + keep_alive / 2)
    }

    async fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let (tx, rx) = oneshot::channel();
        {
            let mut waiters = lock(&self.waiters);
            if let Some(error) = &waiters.dead {
                return Err(error.clone());
            }
            let queued = match &self.client {
                Client::V3(c) => c
                    .try_publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
                    .is_ok(),
                Client::V5(c) => c
                    .try_publish(
                        topic,
                        rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
                        false,
                        payload.to_vec(),
                    )
                    .is_ok(),
            };
            if !queued {
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

    fn close(&self, reason: &str) {
        lock(&self.waiters).fail_all(PublishError::Connection(reason.to_owned()));
        self.driver.abort();
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Applies one event-loop result; returns false when the connection is finished.
fn handle(waiters: &Mutex<Waiters>, event: Result<LoopEvent, String>) -> bool {
    let mut w = lock(waiters);
    match event {
        Ok(LoopEvent::Sent(pkid)) => {
            if let Some(waiter) = w.queued.pop_front() {
                w.sent.insert(pkid, waiter);
            }
        }
        Ok(LoopEvent::Acked(pkid, result)) => {
            w.last_inbound = Some(Instant::now());
            if let Some(waiter) = w.sent.remove(&pkid) {
                let _ = waiter.send(result);
            }
        }
        Ok(LoopEvent::Inbound) => w.last_inbound = Some(Instant::now()),
        Ok(LoopEvent::Other) => {}
        Err(error) => {
            w.fail_all(PublishError::Connection(error));
            return false;
        }
    }
    true
}

fn classify_v3(event: rumqttc::Event) -> LoopEvent {
    use rumqttc::{Event, Outgoing, Packet};
    match event {
        Event::Outgoing(Outgoing::Publish(pkid)) => LoopEvent::Sent(pkid),
        Event::Incoming(Packet::PubAck(ack)) => LoopEvent::Acked(ack.pkid, Ok(())),
        Event::Incoming(_) => LoopEvent::Inbound,
        Event::Outgoing(_) => LoopEvent::Other,
    }
}

fn classify_v5(event: rumqttc::v5::Event) -> LoopEvent {
    use rumqttc::Outgoing;
    use rumqttc::v5::Event;
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    match event {
        Event::Outgoing(Outgoing::Publish(pkid)) => LoopEvent::Sent(pkid),
        Event::Incoming(Packet::PubAck(ack)) => {
            // "No matching subscribers" still means the broker took the message.
            let result = match ack.reason {
                PubAckReason::Success | PubAckReason::NoMatchingSubscribers => Ok(()),
                other => Err(PublishError::Refused(format!("{other:?}"))),
            };
            LoopEvent::Acked(ack.pkid, result)
        }
        Event::Incoming(_) => LoopEvent::Inbound,
        Event::Outgoing(_) => LoopEvent::Other,
    }
}

/// One broker connection per process (per Lambda execution environment), opened lazily and
/// reused across requests and warm invocations.
pub struct Publisher {
    settings: BrokerSettings,
    attempt_timeout: Duration,
    connection: tokio::sync::Mutex<Option<Arc<Connection>>>,
}

impl Publisher {
    pub fn new(settings: BrokerSettings, attempt_timeout: Duration) -> Self {
        Self {
            settings,
            attempt_timeout,
            connection: tokio::sync::Mutex::new(None),
        }
    }

    pub fn broker(&self) -> &BrokerSettings {
        &self.settings
    }

    /// Opens the connection ahead of the first request (Lambda's init phase is free time).
    pub async fn connect_early(&self) {
        if let Err(e) = self.connection().await {
            tracing::warn!(error = %e, "could not prepare the broker connection");
        }
    }

    async fn connection(&self) -> Result<Arc<Connection>, PublishError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.is_dead() {
                tracing::info!("broker connection was lost; reconnecting");
            } else if connection.is_stale(self.settings.keep_alive) {
                tracing::info!("broker connection idle past keep-alive (frozen?); reconnecting");
                connection.close("stale after freeze");
            } else {
                return Ok(connection.clone());
            }
        }
        let connection = Arc::new(Connection::open(&self.settings)?);
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops `connection` if it is still the current one, so the next attempt opens a new one.
    async fn discard(&self, connection: &Arc<Connection>, reason: &str) {
        let mut slot = self.connection.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, connection)) {
            connection.close(reason);
            *slot = None;
        }
    }

    /// Publishes with QoS 1 and waits for the broker's PUBACK of this message. A failed attempt
    /// (dead or stale connection, timeout) is retried once on a fresh connection.
    pub async fn publish(&self, topic: &str, payload: &[u8]) -> Result<(), PublishError> {
        let mut last_error = PublishError::Connection("not attempted".into());
        for attempt in 1..=2 {
            let connection = self.connection().await?;
            match connection
                .publish(topic, payload, self.attempt_timeout)
                .await
            {
                Ok(()) => return Ok(()),
                Err(PublishError::Refused(reason)) => return Err(PublishError::Refused(reason)),
                Err(error) => {
                    tracing::warn!(attempt, error = %error, "publish attempt failed");
                    self.discard(&connection, &error.to_string()).await;
                    last_error = error;
                }
            }
        }
        Err(last_error)
    }
}
