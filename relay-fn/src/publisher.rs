//! The relay's broker connection: one per process (per Lambda execution environment), opened
//! lazily, reused across requests and warm invocations, and replaced when it died or went stale.
//! Each publish waits for the PUBACK of its own message ([`ConfirmedPublisher`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use qlik_events::BrokerSettings;
use qlik_events::mqtt::ConfirmedPublisher;

pub use qlik_events::mqtt::{LinkState, PublishError};

/// Requests that may wait for the event loop at once; beyond it a publish fails (503).
const REQUEST_QUEUE: usize = 1024;

/// Pauses between attempts of [`Publisher::keep_connected`] while the broker cannot be reached:
/// quick enough that `/healthz` turns back to 200 soon after the broker returns, slow enough
/// not to hammer a broker that is starting up.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

pub struct Publisher {
    settings: BrokerSettings,
    attempt_timeout: Duration,
    connection: tokio::sync::Mutex<Option<Arc<ConfirmedPublisher>>>,
    /// [`Self::keep_connected`] runs: it logs outages itself, once each.
    kept: AtomicBool,
}

impl Publisher {
    pub fn new(settings: BrokerSettings, attempt_timeout: Duration) -> Self {
        Self {
            settings,
            attempt_timeout,
            connection: tokio::sync::Mutex::new(None),
            kept: AtomicBool::new(false),
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

    /// The current connection's state; `Down` before the first one is opened.
    pub async fn link_state(&self) -> LinkState {
        match self.connection.lock().await.as_ref() {
            Some(connection) => connection.link_state(),
            None => LinkState::Down {
                error: PublishError::Connection("not connected".into()),
                refused: None,
            },
        }
    }

    /// HTTP mode: keeps a connection open, whether or not requests come, so that
    /// [`Self::link_state`] (`/healthz`, the `broker_connected` gauge) follows the broker and
    /// the first request after an outage finds a connection ready. Logs each change once; runs
    /// until the task is dropped.
    pub async fn keep_connected(&self) {
        self.kept.store(true, Ordering::Relaxed);
        let mut pause = RECONNECT_FIRST;
        let mut was_up: Option<bool> = None;
        loop {
            let down = match self.connection().await {
                Ok(connection) => {
                    let mut link = connection.link();
                    match settled(&mut link, |s| *s != LinkState::Connecting).await {
                        LinkState::Connected => {
                            if was_up != Some(true) {
                                let broker = self.settings.display_url();
                                tracing::info!(broker = %broker, "broker connected");
                            }
                            was_up = Some(true);
                            pause = RECONNECT_FIRST;
                            settled(&mut link, |s| matches!(s, LinkState::Down { .. })).await
                        }
                        other => other,
                    }
                }
                Err(error) => LinkState::Down {
                    error,
                    refused: None,
                },
            };
            if let LinkState::Down { error, refused } = &down
                && was_up != Some(false)
            {
                tracing::warn!(
                    broker = %self.settings.display_url(),
                    error = %error,
                    refused = refused.as_deref(),
                    "broker unreachable; /healthz answers 503 until it is back"
                );
            }
            was_up = Some(false);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(RECONNECT_MAX);
        }
    }

    /// True when nothing came from the broker for longer than the keep-alive allows: the
    /// process was most likely frozen (Lambda between invocations) and the socket is stale.
    fn is_stale(&self, connection: &ConfirmedPublisher) -> bool {
        let keep_alive = self.settings.keep_alive;
        connection
            .silent_for()
            .is_some_and(|silence| silence > keep_alive + keep_alive / 2)
    }

    async fn connection(&self) -> Result<Arc<ConfirmedPublisher>, PublishError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            if connection.is_dead() {
                if !self.kept.load(Ordering::Relaxed) {
                    tracing::info!("broker connection was lost; reconnecting");
                }
            } else if self.is_stale(connection) {
                tracing::info!("broker connection idle past keep-alive (frozen?); reconnecting");
                connection.close("stale after freeze");
            } else {
                return Ok(connection.clone());
            }
        }
        let connection = Arc::new(
            ConfirmedPublisher::connect(&self.settings, REQUEST_QUEUE)
                .map_err(|e| PublishError::Connection(e.to_string()))?,
        );
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// Drops `connection` if it is still the current one, so the next attempt opens a new one.
    async fn discard(&self, connection: &Arc<ConfirmedPublisher>, reason: &str) {
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
                .publish(topic, payload, false, self.attempt_timeout)
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

/// The connection's first state that satisfies `until`; `Down` if the connection is gone.
async fn settled(
    link: &mut tokio::sync::watch::Receiver<LinkState>,
    until: impl FnMut(&LinkState) -> bool,
) -> LinkState {
    match link.wait_for(until).await {
        Ok(state) => state.clone(),
        Err(_) => LinkState::Down {
            error: PublishError::Connection("connection closed".into()),
            refused: None,
        },
    }
}
