//! What the brokers under test do with persistent sessions. The consumer's at-least-once
//! guarantee rests on this: a clean_session=false client gets, on reconnect, what was published
//! while it was away and what it received but never acknowledged.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

const WAIT: Duration = Duration::from_secs(10);

async fn connect(broker: &testkit::TestBroker, client_id: &str) -> (AsyncClient, EventLoop, bool) {
    let mut options = MqttOptions::new(client_id, &broker.host, broker.port);
    options.set_clean_session(false);
    options.set_manual_acks(true);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let present = tokio::time::timeout(WAIT, async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => return ack.session_present,
                Ok(_) => {}
                Err(e) => panic!("{}: {e}", broker.name),
            }
        }
    })
    .await
    .expect("connack");
    (client, eventloop, present)
}

async fn next_publish(eventloop: &mut EventLoop) -> Option<rumqttc::Publish> {
    tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return p,
                Ok(_) => {}
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .ok()
}

async fn publish(broker: &testkit::TestBroker, topic: &str, payload: &str) {
    let options = MqttOptions::new(testkit::unique("pub"), &broker.host, broker.port);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())
        .await
        .expect("queued");
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Incoming(Packet::PubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await
    .expect("puback");
}

async fn suback(eventloop: &mut EventLoop) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(_))) = eventloop.poll().await {
                return;
            }
        }
    })
    .await
    .expect("suback");
}

#[tokio::test]
async fn persistent_sessions_keep_offline_and_unacked_messages() {
    for broker in testkit::brokers() {
        let id = testkit::unique("session-probe");
        let topic = format!("probe/{id}");
        let (client, mut eventloop, _) = connect(&broker, &id).await;
        client.subscribe(&topic, QoS::AtLeastOnce).await.unwrap();
        suback(&mut eventloop).await;
        client.disconnect().await.ok();
        let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
        drop(eventloop);

        publish(&broker, &topic, "while-away").await;

        let (_client, mut eventloop, present) = connect(&broker, &id).await;
        assert!(present, "{}: session not resumed", broker.name);
        let offline = next_publish(&mut eventloop).await;
        assert_eq!(
            offline.map(|p| p.payload.to_vec()),
            Some(b"while-away".to_vec()),
            "{}: message published while the client was away",
            broker.name
        );
        // Not acknowledged: drop the connection, as a killed consumer would.
        drop(eventloop);
        let (client, mut eventloop, present) = connect(&broker, &id).await;
        assert!(present, "{}: session not resumed after drop", broker.name);
        let again = next_publish(&mut eventloop)
            .await
            .unwrap_or_else(|| panic!("{}: unacknowledged message not redelivered", broker.name));
        assert_eq!(again.payload.as_ref(), b"while-away");
        client.ack(&again).await.expect("ack queued");
        assert!(
            broker.persistent_sessions,
            "{}: testkit should flag this broker as keeping sessions",
            broker.name
        );
    }
}
