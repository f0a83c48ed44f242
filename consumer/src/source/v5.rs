//! The MQTT 5 event loop: the same as MQTT 3.1.1, with a session expiry instead of clean
//! session off, and shared subscriptions (`$share/<group>/<filter>`) available.

use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::{AsyncClient, Event};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Acker, Message, SourceConfig, SourceError, SourceEvent, log_connection_error};

pub(super) fn spawn(
    config: &SourceConfig,
    tx: mpsc::UnboundedSender<SourceEvent>,
    mut stopped: watch::Receiver<bool>,
) -> Result<JoinHandle<()>, SourceError> {
    let mut options = config.broker.mqtt_options_v5(config.session_expiry)?;
    options.set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    let filter = config.filter.clone();
    let broker = config.broker.display_url();
    let mut backoff = config.backoff.clone();
    Ok(tokio::spawn(async move {
        let mut failures = 0u32;
        let mut subscribed_once = false;
        loop {
            let event = tokio::select! {
                event = eventloop.poll() => event,
                _ = stopped.changed() => {
                    let _ = client.disconnect().await;
                    // Give the DISCONNECT a moment to leave; the session stays either way.
                    let _ = tokio::time::timeout(std::time::Duration::from_millis(300), eventloop.poll()).await;
                    return;
                }
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    failures = 0;
                    backoff.reset();
                    tracing::info!(
                        broker,
                        session_present = ack.session_present,
                        "connected to MQTT broker"
                    );
                    // A resumed session still holds the subscription; a new one (first start,
                    // expired session, broker restart without persistence) needs it again.
                    if !ack.session_present || !subscribed_once {
                        if let Err(e) = client.subscribe(filter.clone(), QoS::AtLeastOnce).await {
                            tracing::error!("cannot queue SUBSCRIBE: {e}");
                        }
                        subscribed_once = true;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    if let Some(code) = ack
                        .return_codes
                        .iter()
                        .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    {
                        let _ = tx.send(SourceEvent::Fatal(SourceError::SubscriptionRefused {
                            filter: filter.clone(),
                            reason: format!("{code:?}"),
                        }));
                        return;
                    }
                    tracing::info!(filter, "subscribed with QoS 1");
                    let _ = tx.send(SourceEvent::Subscribed);
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let message = Message {
                        topic: String::from_utf8_lossy(&publish.topic).into_owned(),
                        payload: publish.payload.clone(),
                        redelivered: publish.dup,
                        acker: Acker::V5(client.clone(), publish),
                    };
                    if tx.send(SourceEvent::Message(Box::new(message))).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let delay = backoff.next_delay();
                    log_connection_error(&broker, failures, &error, delay);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stopped.changed() => return,
                    }
                }
            }
        }
    }))
}
