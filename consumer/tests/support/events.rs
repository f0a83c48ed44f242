//! Sample events made unique, and an MQTT publisher.

use std::time::Duration;

use consumer::alert::Alert;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use serde_json::Value;

use super::{TENANT, WAIT};

/// The sample envelopes, named by what the tests call them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sample {
    Legacy,
    Hybrid,
    CloudEventsAppReload,
    CloudEventsReloadFinished,
}

pub const ALL_SAMPLES: [Sample; 4] = [
    Sample::Legacy,
    Sample::Hybrid,
    Sample::CloudEventsAppReload,
    Sample::CloudEventsReloadFinished,
];

fn set(obj: &mut Value, path: &[&str], value: &str) {
    let mut node = obj;
    for key in &path[..path.len() - 1] {
        match node.get_mut(*key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut()
        && map.contains_key(path[path.len() - 1])
    {
        map.insert(
            path[path.len() - 1].to_owned(),
            Value::String(value.to_owned()),
        );
    }
}

/// The reload id [`event`] gives an event: its own, so that events of one test are different
/// reloads (the consumer alerts once per reload).
pub fn reload_of(event_id: &str) -> String {
    format!("reload-{event_id}")
}

/// A sample body with its event id, tenant and app replaced (only the fields the format has),
/// about reload [`reload_of`]`(event_id)`.
pub fn event(sample: Sample, event_id: &str, tenant: &str, app_id: &str) -> Vec<u8> {
    event_with_reload(sample, event_id, tenant, app_id, &reload_of(event_id))
}

/// A sample body about a given reload (the fake tenant knows the samples' own reload ids).
pub fn event_with_reload(
    sample: Sample,
    event_id: &str,
    tenant: &str,
    app_id: &str,
    reload_id: &str,
) -> Vec<u8> {
    let body = match sample {
        Sample::Legacy => testkit::sample("app-reload-failed.legacy.json"),
        Sample::Hybrid => testkit::hybrid_sample(),
        Sample::CloudEventsAppReload => testkit::sample("app-reload-failed.cloudevents.json"),
        Sample::CloudEventsReloadFinished => {
            testkit::sample("reload-finished-failed.cloudevents.json")
        }
    };
    let mut v: Value = serde_json::from_slice(&body).expect("sample is JSON");
    set(&mut v, &["id"], event_id);
    set(&mut v, &["eventId"], event_id);
    set(&mut v, &["tenantid"], tenant);
    set(&mut v, &["extensions", "tenantId"], tenant);
    set(&mut v, &["toplevelresourceid"], app_id);
    set(&mut v, &["extensions", "topLevelResourceId"], app_id);
    set(&mut v, &["data", "appId"], app_id);
    set(&mut v, &["data", "reloadId"], reload_id);
    if sample == Sample::CloudEventsReloadFinished {
        set(&mut v, &["data", "id"], reload_id);
    }
    serde_json::to_vec(&v).expect("serializes")
}

/// A reload that succeeded (no alert expected).
pub fn succeeded_event(event_id: &str, app_id: &str) -> Vec<u8> {
    let body = event(Sample::CloudEventsAppReload, event_id, TENANT, app_id);
    let text = String::from_utf8(body).expect("utf8");
    text.replace("\"status\":\"error\"", "\"status\":\"ok\"")
        .into_bytes()
}

/// An alert as the pipeline makes one: about a failed app reload of `app_id` (reload
/// `reload_id`) by [`TENANT`], with `context` (a JSON object) as its template context; a test
/// sets any other field with `Alert { …, ..reload_alert(…) }`.
pub fn reload_alert(event_id: &str, app_id: &str, reload_id: &str, context: Value) -> Alert {
    let Value::Object(context) = context else {
        panic!("a template context is a JSON object: {context}");
    };
    Alert {
        app_id: Some(app_id.to_owned()),
        reload_id: Some(reload_id.to_owned()),
        context,
        ..Alert::new(event_id, qlik_events::APP_RELOAD_FINISHED, TENANT)
    }
}

/// Publishes with QoS 1 and returns once the broker acknowledged it.
pub async fn publish(broker: &testkit::TestBroker, topic: &str, payload: Vec<u8>) {
    let mut options = MqttOptions::new(testkit::unique("test-pub"), &broker.host, broker.port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload)
        .await
        .expect("publish queued");
    let acked = async {
        let mut ours = None;
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => ours = Some(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == ours => return,
                Ok(_) => {}
                Err(e) => panic!("publishing to {}: {e}", broker.name),
            }
        }
    };
    tokio::time::timeout(WAIT, acked)
        .await
        .unwrap_or_else(|_| panic!("no PUBACK from {}", broker.name));
    let _ = client.disconnect().await;
}

/// Publishes one `sample` event of `TENANT`'s app `app_id`, with id `event_id`, to the set-up's
/// topic; returns once the broker acknowledged it.
pub async fn publish_event(
    broker: &testkit::TestBroker,
    setup: &super::config::Setup,
    sample: Sample,
    event_id: &str,
    app_id: &str,
) {
    publish(
        broker,
        &setup.topic,
        event(sample, event_id, TENANT, app_id),
    )
    .await;
}

/// Publishes every payload on one connection, in order, and returns once all are acknowledged.
pub async fn burst(broker: &testkit::TestBroker, topic: &str, payloads: Vec<Vec<u8>>) {
    burst_with(broker, topic, payloads, 1, WAIT).await;
}

/// [`burst`] with up to `in_flight` publishes unacknowledged at a time, all acknowledged within
/// `within`.
pub async fn burst_with(
    broker: &testkit::TestBroker,
    topic: &str,
    payloads: Vec<Vec<u8>>,
    in_flight: u16,
    within: Duration,
) {
    let mut options = MqttOptions::new(testkit::unique("burst"), &broker.host, broker.port);
    options.set_max_packet_size(1024 * 1024, 1024 * 1024);
    options.set_inflight(in_flight);
    let (client, mut eventloop) = AsyncClient::new(options, payloads.len() + 10);
    let count = payloads.len();
    for payload in payloads {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .await
            .expect("queued");
    }
    let mut acked = 0;
    let all = async {
        while acked < count {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acked += 1,
                Ok(_) => {}
                Err(e) => panic!("burst publisher on {}: {e}", broker.name),
            }
        }
    };
    tokio::time::timeout(within, all)
        .await
        .unwrap_or_else(|_| panic!("{}: every event acknowledged by the broker", broker.name));
    let _ = client.disconnect().await;
}
