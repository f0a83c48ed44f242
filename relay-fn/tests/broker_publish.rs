//! The relay in HTTP mode against real brokers (embedded rumqttd always, Mosquitto when it
//! answers): what is accepted arrives byte-for-byte on its topic, what is refused never does,
//! and no request is confirmed before the broker acknowledged its own message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qlik_events::{BrokerSettings, TopicRouting, WebhookSecrets};
use relay_fn::decision::Policy;
use relay_fn::publisher::Publisher;
use relay_fn::service::Relay;
use testkit::proxy::TcpProxy;
use testkit::{Subscriber, TEST_SECRET, TestBroker};
use tokio::net::TcpListener;

const TENANT: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
const QUIET: Duration = Duration::from_millis(500);
const ARRIVAL: Duration = Duration::from_secs(10);

fn policy(root: &str) -> Policy {
    Policy {
        secrets: WebhookSecrets::from_list(TEST_SECRET).unwrap(),
        max_body_bytes: 256 * 1024,
        allowed_tenants: None,
        max_event_age: None,
        required_header: None,
        routing: TopicRouting::with_root(root).unwrap(),
        butler_compat: false,
    }
}

/// Serves the relay in HTTP mode on a free loopback port, as the binary does.
async fn serve(relay: Arc<Relay>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(relay_fn::http_server::serve_listener(
        listener,
        relay,
        relay_fn::http_server::HttpLimits::default(),
        std::future::pending(),
    ));
    addr
}

async fn relay_for(broker: &TestBroker, root: &str) -> SocketAddr {
    let settings = BrokerSettings::new(&broker.host, broker.port, testkit::unique("relay"));
    serve(Relay::new(
        policy(root),
        Publisher::new(settings, Duration::from_secs(5)),
    ))
    .await
}

async fn post(
    addr: SocketAddr,
    body: &[u8],
    signature: Option<String>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{addr}/"))
        .header("content-type", "application/json")
        .header("user-agent", "Qlik Webhook")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Qlik-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_events_arrive_on_their_topic_byte_for_byte() {
    for broker in testkit::brokers() {
        let root = testkit::unique("relaytest");
        let mut subscriber = Subscriber::connect(&broker, &format!("{root}/#")).await;
        let relay = relay_for(&broker, &root).await;
        let samples = [
            (
                testkit::sample("app-reload-failed.legacy.json"),
                format!("{root}/app/reload/{TENANT}"),
            ),
            (
                testkit::sample("app-reload-failed.cloudevents.json"),
                format!("{root}/app/reload/{TENANT}"),
            ),
            (
                testkit::hybrid_sample(),
                format!("{root}/app/reload/{TENANT}"),
            ),
            (
                testkit::sample("reload-finished-failed.cloudevents.json"),
                format!("{root}/event/com.qlik.v1.reload.finished/{TENANT}"),
            ),
        ];
        for (body, topic) in samples {
            let (status, reply) = post(relay, &body, Some(testkit::signature(&body))).await;
            assert_eq!(status, 200, "{} broker: {reply}", broker.name);
            assert_eq!(reply["topic"], topic.as_str());
            let (got_topic, payload) = subscriber
                .next(ARRIVAL)
                .await
                .unwrap_or_else(|| panic!("nothing arrived on the {} broker", broker.name));
            assert_eq!(got_topic, topic);
            assert_eq!(payload, body, "payload must be the original bytes");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_never_published() {
    for broker in testkit::brokers() {
        let root = testkit::unique("relaytest");
        let mut subscriber = Subscriber::connect(&broker, &format!("{root}/#")).await;
        let relay = relay_for(&broker, &root).await;
        let body = testkit::sample("app-reload-failed.cloudevents.json");
        let other_secret = qlik_events::sign("another-secret-that-is-long-enough-0000", &body);
        let not_event = br#"{"hello":"world"}"#.to_vec();
        let oversized = vec![b' '; 256 * 1024 + 1];
        for (body, signature, expected) in [
            (body.clone(), None, 401),
            (body.clone(), Some(other_secret), 401),
            (body.clone(), Some("not-hex".to_owned()), 401),
            (not_event.clone(), Some(testkit::signature(&not_event)), 400),
            (oversized.clone(), Some(testkit::signature(&oversized)), 413),
        ] {
            let (status, reply) = post(relay, &body, signature).await;
            assert_eq!(status, expected, "{} broker: {reply}", broker.name);
        }
        let get = reqwest::get(format!("http://{relay}/")).await.unwrap();
        assert_eq!(get.status().as_u16(), 405);
        // A valid event afterwards is the first and only message on the topic tree.
        let (status, _) = post(relay, &body, Some(testkit::signature(&body))).await;
        assert_eq!(status, 200);
        let (_, payload) = subscriber
            .next(ARRIVAL)
            .await
            .expect("the valid event arrives");
        assert_eq!(payload, body);
        assert_eq!(
            subscriber.next(QUIET).await,
            None,
            "nothing else was published"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_is_503_and_nothing_is_confirmed() {
    // A port nothing listens on: bind, note the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let settings = BrokerSettings::new("127.0.0.1", closed.port(), testkit::unique("relay"));
    let relay = serve(Relay::new(
        policy("qscloud"),
        Publisher::new(settings, Duration::from_secs(2)),
    ))
    .await;
    let body = testkit::sample("app-reload-failed.cloudevents.json");
    let (status, reply) = post(relay, &body, Some(testkit::signature(&body))).await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        reply.get("topic").is_none(),
        "a 503 must not claim a topic: {reply}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_each_wait_for_their_own_puback() {
    for broker in testkit::brokers() {
        let root = testkit::unique("relaytest");
        let mut subscriber = Subscriber::connect(&broker, &format!("{root}/#")).await;
        let relay = relay_for(&broker, &root).await;
        let template =
            String::from_utf8(testkit::sample("app-reload-failed.cloudevents.json")).unwrap();
        let bodies: Vec<Vec<u8>> = (0..50)
            .map(|i| {
                template
                    .replace(
                        "0b7a6c55-8d2e-4f31-a6b4-3e9c1d2f7a80",
                        &format!("event-{i}"),
                    )
                    .into_bytes()
            })
            .collect();
        let replies = futures_join(bodies.iter().cloned().map(|b| async move {
            let signature = testkit::signature(&b);
            post(relay, &b, Some(signature)).await
        }))
        .await;
        for (i, (status, reply)) in replies.iter().enumerate() {
            assert_eq!(*status, 200, "{} broker, request {i}: {reply}", broker.name);
            assert_eq!(reply["eventId"], format!("event-{i}"));
        }
        let mut seen = std::collections::HashSet::new();
        for _ in 0..bodies.len() {
            let (_, payload) = subscriber
                .next(ARRIVAL)
                .await
                .expect("every confirmed event arrives");
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            seen.insert(v["id"].as_str().unwrap().to_owned());
        }
        assert_eq!(seen.len(), bodies.len(), "each event exactly once");
    }
}

async fn futures_join<F: std::future::Future<Output = T> + Send + 'static, T: Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<T> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

/// A relay whose broker connection runs through a [`TcpProxy`], and a subscriber on its
/// topic tree (connected directly, so it is not affected by what the proxy does).
async fn relay_behind_proxy(
    broker: &TestBroker,
    attempt_timeout: Duration,
) -> (TcpProxy, Subscriber, SocketAddr) {
    let upstream: SocketAddr = format!("{}:{}", broker.host, broker.port).parse().unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let root = testkit::unique("relaytest");
    let subscriber = Subscriber::connect(broker, &format!("{root}/#")).await;
    let settings = BrokerSettings::new("127.0.0.1", proxy.addr.port(), testkit::unique("relay"));
    let relay = serve(Relay::new(
        policy(&root),
        Publisher::new(settings, attempt_timeout),
    ))
    .await;
    (proxy, subscriber, relay)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_died_between_requests_is_reestablished() {
    for broker in testkit::brokers() {
        let (proxy, mut subscriber, relay) =
            relay_behind_proxy(&broker, Duration::from_secs(3)).await;
        let body = testkit::sample("app-reload-failed.cloudevents.json");
        for round in 0..3 {
            let (status, reply) = post(relay, &body, Some(testkit::signature(&body))).await;
            assert_eq!(
                status, 200,
                "{} broker, round {round}: {reply}",
                broker.name
            );
            let (_, payload) = subscriber
                .next(ARRIVAL)
                .await
                .expect("published after reconnect");
            assert_eq!(payload, body);
            proxy.cut_all();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silently_dead_connection_times_out_and_the_publish_is_retried_once() {
    for broker in testkit::brokers() {
        let (proxy, mut subscriber, relay) =
            relay_behind_proxy(&broker, Duration::from_millis(1500)).await;
        let body = testkit::sample("app-reload-failed.cloudevents.json");
        let (status, _) = post(relay, &body, Some(testkit::signature(&body))).await;
        assert_eq!(status, 200);
        assert!(subscriber.next(ARRIVAL).await.is_some());
        // The old socket swallows the next publish; only a fresh connection delivers it.
        proxy.stall_all();
        let (status, reply) = post(relay, &body, Some(testkit::signature(&body))).await;
        assert_eq!(status, 200, "{} broker: {reply}", broker.name);
        let (_, payload) = subscriber
            .next(ARRIVAL)
            .await
            .expect("retried on a new connection");
        assert_eq!(payload, body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_publishes_are_confirmed_too() {
    for broker in testkit::brokers() {
        let root = testkit::unique("relaytest");
        let mut subscriber = Subscriber::connect(&broker, &format!("{root}/#")).await;
        let settings = BrokerSettings::from_url(&broker.url_v5(), &testkit::unique("relay5"))
            .expect("test broker URL parses");
        assert_eq!(settings.version, qlik_events::MqttVersion::V5);
        let relay = serve(Relay::new(
            policy(&root),
            Publisher::new(settings, Duration::from_secs(5)),
        ))
        .await;
        let body = testkit::sample("reload-finished-failed.cloudevents.json");
        let (status, reply) = post(relay, &body, Some(testkit::signature(&body))).await;
        assert_eq!(status, 200, "{} broker over MQTT 5: {reply}", broker.name);
        let (topic, payload) = subscriber.next(ARRIVAL).await.expect("arrives over MQTT 5");
        assert_eq!(
            topic,
            format!("{root}/event/com.qlik.v1.reload.finished/{TENANT}")
        );
        assert_eq!(payload, body);
    }
}
