//! The consumer's persistent session on the broker, looked at and created without `run`:
//! `consumer session status|create` and the note `consumer webhook create` prints.
//!
//! A broker queues QoS 1 messages only for a session that exists. Events the relay publishes
//! before the consumer's session was ever created are dropped by the broker, so the session
//! must exist before the webhook is registered. Creating it means connecting once with the
//! configured client id and clean session off (MQTT 5: the configured session expiry) and
//! subscribing; nothing is acknowledged, so whatever the broker hands over stays queued for
//! `run`.
//!
//! Connecting with the client id of a running consumer takes its connection over for a
//! moment (the broker closes the older one). When `metrics.listen` is set and the consumer's
//! `/healthz` there says it is connected, these functions answer from that instead.

use std::net::SocketAddr;
use std::time::Duration;

use qlik_events::mqtt::{ClientOptions, MqttClient, MqttEvent, MqttEventLoop, Session};

use super::SourceConfig;
use crate::config::ConsumerConfig;

/// How long one look at the broker may take, connecting included.
const BROKER_DEADLINE: Duration = Duration::from_secs(10);
/// How long the running consumer's `/healthz` may take to answer.
const HEALTHZ_TIMEOUT: Duration = Duration::from_secs(2);

/// What the broker holds for the consumer's client id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// The consumer's `/healthz` says it is running and connected: its session exists and is
    /// in use (the broker was not contacted).
    Running,
    /// The broker resumed a session for the client id (CONNACK session present).
    Present,
    /// The broker had no session for the client id.
    Absent,
}

/// Why the broker could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// `broker.cleanSession: true`: the consumer keeps no session, so there is none to create.
    #[error(
        "broker.cleanSession is true: the consumer keeps no session on the broker, and events published while it is stopped are lost; remove cleanSession (default false) to keep them"
    )]
    CleanSession,
    #[error("broker settings refused: {0}")]
    Settings(#[from] qlik_events::BrokerError),
    /// Transport, TLS or timeout: the broker cannot be reached.
    #[error("cannot reach the MQTT broker {broker}: {reason}")]
    Unreachable { broker: String, reason: String },
    /// The broker answered and said no (CONNACK refusal, SUBACK failure).
    #[error("the MQTT broker {broker} refused {what}: {reason}")]
    Refused {
        broker: String,
        what: &'static str,
        reason: String,
    },
}

/// What `create` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    /// The consumer is running and connected (its `/healthz` says so): nothing to do.
    Running,
    /// Subscribed in a persistent session; `was_present`: the broker already had one.
    Subscribed { was_present: bool },
}

/// The session settings of `config`, as `run` uses them.
pub struct SessionTarget {
    source: SourceConfig,
    metrics_listen: Option<SocketAddr>,
}

impl SessionTarget {
    pub fn from_config(config: &ConsumerConfig) -> Self {
        Self {
            source: SourceConfig::from_config(config),
            metrics_listen: config.consumer.ha.metrics_listen,
        }
    }

    pub fn client_id(&self) -> &str {
        &self.source.broker.client_id
    }

    /// The subscription, possibly `$share/<group>/…`.
    pub fn filter(&self) -> &str {
        &self.source.filter
    }

    /// The MQTT 5 session expiry `run` asks for (`None` with MQTT 3.1.1, where the broker
    /// decides how long a session lasts).
    pub fn expiry(&self) -> Option<Duration> {
        match self.source.broker.version {
            qlik_events::MqttVersion::V5 => self.source.session_expiry,
            qlik_events::MqttVersion::V311 => None,
        }
    }

    /// The broker as a URL without secrets.
    pub fn broker(&self) -> String {
        self.source.broker.display_url()
    }

    /// Whether the broker holds a session for the client id. Leaves nothing behind: a session
    /// that the look itself created is removed again.
    pub async fn status(&self) -> Result<SessionState, SessionError> {
        self.check_clean_session()?;
        if self.running().await {
            return Ok(SessionState::Running);
        }
        bounded(self.broker(), async {
            let (client, mut eventloop, present) = self.connect(self.persistent()).await?;
            disconnect(&client, &mut eventloop).await;
            if present {
                return Ok(SessionState::Present);
            }
            // That connection created an empty session; a clean one ends it (MQTT 3.1.1:
            // clean session discards it; MQTT 5: clean start, and no expiry).
            let (client, mut eventloop, _) = self.connect(Session::CLEAN).await?;
            disconnect(&client, &mut eventloop).await;
            Ok(SessionState::Absent)
        })
        .await
    }

    /// Creates the session as `run` would, subscribed to the consumer's filter with QoS 1,
    /// and disconnects, acknowledging nothing.
    pub async fn create(&self) -> Result<Created, SessionError> {
        self.check_clean_session()?;
        if self.running().await {
            return Ok(Created::Running);
        }
        bounded(self.broker(), async {
            let (client, mut eventloop, present) = self.connect(self.persistent()).await?;
            // Subscribed again even when the session was resumed, so a changed
            // subscriptionRoot or group is in the session too (a repeated SUBSCRIBE replaces
            // the old one).
            client
                .subscribe_qos1(self.filter())
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            loop {
                match eventloop.poll().await {
                    Ok(MqttEvent::SubAck(granted)) => {
                        if let Some(Err(reason)) = granted.into_iter().find(Result::is_err) {
                            disconnect(&client, &mut eventloop).await;
                            return Err(SessionError::Refused {
                                broker: self.broker(),
                                what: "the subscription",
                                reason: format!("{} ({reason})", self.filter()),
                            });
                        }
                        break;
                    }
                    // Queued messages arrive now; dropped unacknowledged, they stay with the
                    // broker for `run`.
                    Ok(_) => {}
                    Err(e) => return Err(self.unreachable(e.to_string())),
                }
            }
            disconnect(&client, &mut eventloop).await;
            Ok(Created::Subscribed {
                was_present: present,
            })
        })
        .await
    }

    fn check_clean_session(&self) -> Result<(), SessionError> {
        if self.source.clean_session {
            Err(SessionError::CleanSession)
        } else {
            Ok(())
        }
    }

    fn persistent(&self) -> Session {
        Session {
            clean_session: false,
            expiry: self.source.session_expiry,
        }
    }

    fn unreachable(&self, reason: String) -> SessionError {
        SessionError::Unreachable {
            broker: self.broker(),
            reason,
        }
    }

    /// Connects and waits for the CONNACK; returns its session-present flag. Manual
    /// acknowledgements, so nothing the broker pushes is taken away from `run`.
    async fn connect(
        &self,
        session: Session,
    ) -> Result<(MqttClient, MqttEventLoop, bool), SessionError> {
        let (client, mut eventloop) = MqttClient::new(
            &self.source.broker,
            ClientOptions {
                session,
                manual_acks: true,
                request_queue: 16,
                // Nothing is acknowledged here, so an MQTT 5 broker need push only one queued
                // message; it stays queued all the same.
                receive_maximum: Some(1),
            },
        )?;
        loop {
            match eventloop.poll().await {
                Ok(MqttEvent::ConnAck { session_present }) => {
                    return Ok((client, eventloop, session_present));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(match e.connack_refusal() {
                        Some(code) => SessionError::Refused {
                            broker: self.broker(),
                            what: "the connection",
                            reason: format!("{code} (client id {})", self.client_id()),
                        },
                        None => self.unreachable(e.to_string()),
                    });
                }
            }
        }
    }

    /// Whether a consumer answers on `metrics.listen` that it is connected to the broker.
    async fn running(&self) -> bool {
        match self.metrics_listen {
            Some(addr) => healthz_says_connected(addr).await,
            None => false,
        }
    }
}

/// `/healthz` on `addr` (an unspecified address, e.g. `0.0.0.0`, asked on loopback) reports
/// `"broker": "connected"`. Anything else (nothing listening, another answer) is `false`.
async fn healthz_says_connected(addr: SocketAddr) -> bool {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let Ok(client) = reqwest::Client::builder()
        .timeout(HEALTHZ_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    else {
        return false;
    };
    let Ok(response) = client.get(format!("http://{addr}/healthz")).send().await else {
        return false;
    };
    // A 503 (e.g. the store is down) still says whether the broker is connected.
    match response.json::<serde_json::Value>().await {
        Ok(body) => body["broker"] == "connected",
        Err(_) => false,
    }
}

async fn bounded<T>(
    broker: String,
    work: impl std::future::Future<Output = Result<T, SessionError>>,
) -> Result<T, SessionError> {
    tokio::time::timeout(BROKER_DEADLINE, work)
        .await
        .unwrap_or_else(|_| {
            Err(SessionError::Unreachable {
                broker,
                reason: format!("no answer within {}s", BROKER_DEADLINE.as_secs()),
            })
        })
}

/// A clean DISCONNECT, given a moment to leave: the persistent session stays either way.
async fn disconnect(client: &MqttClient, eventloop: &mut MqttEventLoop) {
    eventloop
        .disconnect(client, Duration::from_millis(500))
        .await;
}
