//! Test support shared by the relay's and the consumer's tests.
//!
//! Every broker test runs against [`brokers`]: always an embedded rumqttd started in the test
//! process, and also the real Mosquitto on 127.0.0.1:1883 when it answers (CI makes sure it does).

pub mod butler;
pub mod emf;
pub mod fake_tenant;
pub mod process;
pub mod proxy;

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};

/// The webhook secret used by the shipped sample events and every test (documented in the
/// README). Never use it for a real webhook.
pub const TEST_SECRET: &str = "relay-test-secret-do-not-use-in-production-0001";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestBroker {
    /// `embedded` or `mosquitto`, for assertion messages.
    pub name: &'static str,
    pub host: String,
    /// MQTT 3.1.1 port.
    pub port: u16,
    /// MQTT 5 port (the same as `port` on Mosquitto).
    pub v5_port: u16,
    /// Whether the broker keeps sessions of clients that connect with clean session off: their
    /// subscriptions, the QoS 1 messages published while they were away, and the ones they
    /// received but never acknowledged. Both Mosquitto and rumqttd 0.20 do (rumqttd keeps a
    /// per-session cursor into its commit log and rewinds it to the first unacknowledged
    /// message); `consumer/tests/broker_sessions.rs` checks it on every broker.
    pub persistent_sessions: bool,
}

impl TestBroker {
    pub fn url(&self) -> String {
        format!("mqtt://{}:{}", self.host, self.port)
    }

    pub fn url_v5(&self) -> String {
        format!("mqtt://{}:{}?version=5", self.host, self.v5_port)
    }
}

/// The in-process broker, started once per test binary.
pub fn embedded() -> TestBroker {
    static BROKER: OnceLock<embedded_broker::EmbeddedBroker> = OnceLock::new();
    let broker = BROKER.get_or_init(|| {
        embedded_broker::start(None).expect("embedded MQTT broker starts on a free loopback port")
    });
    TestBroker {
        name: "embedded",
        host: broker.v4.ip().to_string(),
        port: broker.v4.port(),
        v5_port: broker.v5.port(),
        persistent_sessions: true,
    }
}

/// Mosquitto on 127.0.0.1:1883, when something listens there (`TESTKIT_NO_MOSQUITTO=1` skips it).
pub fn mosquitto() -> Option<TestBroker> {
    if std::env::var_os("TESTKIT_NO_MOSQUITTO").is_some() {
        return None;
    }
    let addr: SocketAddr = ([127, 0, 0, 1], 1883).into();
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()?;
    Some(TestBroker {
        name: "mosquitto",
        host: "127.0.0.1".into(),
        port: 1883,
        v5_port: 1883,
        persistent_sessions: true,
    })
}

/// The brokers a broker test must pass against: embedded always, Mosquitto when it answers.
pub fn brokers() -> Vec<TestBroker> {
    let mut brokers = vec![embedded()];
    match mosquitto() {
        Some(m) => brokers.push(m),
        None => {
            eprintln!("testkit: Mosquitto not answering on 127.0.0.1:1883; embedded broker only")
        }
    }
    brokers
}

/// A name no other test (or earlier run against the same Mosquitto) uses, for topics and client ids.
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// The workspace's `testdata/` folder.
pub fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata")
}

/// A sample body from `testdata/qlik-samples/`, byte for byte.
pub fn sample(file: &str) -> Vec<u8> {
    let path = testdata().join("qlik-samples").join(file);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Qlik's hybrid envelope (both field sets), built as Qlik sent it from 2025-11 to 2026-10: the
/// CloudEvents sample with the legacy field set added.
pub fn hybrid_sample() -> Vec<u8> {
    let ce = sample("app-reload-failed.cloudevents.json");
    let envelope = qlik_events::Envelope::parse(&ce).expect("sample parses");
    qlik_events::with_legacy_fields(&ce, &envelope).expect("sample is an object")
}

/// Signs `body` with [`TEST_SECRET`].
pub fn signature(body: &[u8]) -> String {
    qlik_events::sign(TEST_SECRET, body)
}

/// An MQTT 3.1.1 subscriber that collects what arrives on a topic filter.
pub struct Subscriber {
    _client: AsyncClient,
    rx: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl Subscriber {
    /// Connects, subscribes with QoS 1, and returns once the broker granted the subscription.
    pub async fn connect(broker: &TestBroker, filter: &str) -> Subscriber {
        let mut options = MqttOptions::new(unique("testkit-sub"), &broker.host, broker.port);
        options.set_max_packet_size(1024 * 1024, 1024 * 1024);
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe request queued");
        wait_for_suback(&mut eventloop, broker).await;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(event) = eventloop.poll().await {
                if let Event::Incoming(Packet::Publish(p)) = event
                    && tx.send((p.topic.to_string(), p.payload.to_vec())).is_err()
                {
                    break;
                }
            }
        });
        Subscriber {
            _client: client,
            rx,
        }
    }

    /// The next message, or `None` if none arrives within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Option<(String, Vec<u8>)> {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

async fn wait_for_suback(eventloop: &mut EventLoop, broker: &TestBroker) {
    let wait = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!(
                    "test subscriber cannot reach the {} broker: {e}",
                    broker.name
                ),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("no SUBACK from the {} broker in 10 s", broker.name));
}
