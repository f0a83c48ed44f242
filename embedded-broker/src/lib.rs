//! An MQTT 3.1.1 + 5 broker running inside the process, for `relay-fn --features embedded-broker`
//! and for tests that must pass without an external broker.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedBrokerError {
    #[error("no free port on {0}: {1}")]
    NoPort(String, std::io::Error),
    #[error("embedded broker configuration refused: {0}")]
    Config(String),
    #[error("embedded broker did not accept connections on {0} within 10 s")]
    NotListening(SocketAddr),
}

/// Addresses of a running embedded broker. It lives until the process exits.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// MQTT 3.1.1 listener.
    pub v4: SocketAddr,
    /// MQTT 5 listener.
    pub v5: SocketAddr,
}

fn free_port(host: &str) -> Result<SocketAddr, EmbeddedBrokerError> {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| EmbeddedBrokerError::NoPort(host.to_owned(), e))
}

/// Starts a broker on `v4` (MQTT 3.1.1) or, with `None`, on a free loopback port, plus an MQTT 5
/// listener on a free loopback port, and returns once both accept connections.
pub fn start(v4: Option<SocketAddr>) -> Result<EmbeddedBroker, EmbeddedBrokerError> {
    let v4 = match v4 {
        Some(addr) => addr,
        None => free_port("127.0.0.1")?,
    };
    let v5 = free_port("127.0.0.1")?;
    let connections = serde_json::json!({
        "connection_timeout_ms": 60000,
        "max_payload_size": 1_048_576,
        "max_inflight_count": 200,
        "dynamic_filters": true
    });
    let config = serde_json::json!({
        "id": 0,
        "router": {
            "max_connections": 1000,
            "max_outgoing_packet_count": 200,
            "max_segment_size": 104_857_600,
            "max_segment_count": 10
        },
        "v4": { "1": { "name": "v4-1", "listen": v4.to_string(), "next_connection_delay_ms": 1,
                       "connections": connections } },
        "v5": { "1": { "name": "v5-1", "listen": v5.to_string(), "next_connection_delay_ms": 1,
                       "connections": connections } }
    });
    let config: rumqttd::Config =
        serde_json::from_value(config).map_err(|e| EmbeddedBrokerError::Config(e.to_string()))?;
    std::thread::Builder::new()
        .name("embedded-mqtt-broker".into())
        .spawn(move || {
            let mut broker = rumqttd::Broker::new(config);
            if let Err(e) = broker.start() {
                eprintln!("embedded MQTT broker stopped: {e}");
            }
        })
        .map_err(|e| EmbeddedBrokerError::Config(e.to_string()))?;
    for addr in [v4, v5] {
        wait_listening(addr)?;
    }
    Ok(EmbeddedBroker { v4, v5 })
}

fn wait_listening(addr: SocketAddr) -> Result<(), EmbeddedBrokerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // The broker thread binds asynchronously and offers no readiness signal; polling the port
    // is the only observable event.
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if Instant::now() > deadline {
            return Err(EmbeddedBrokerError::NotListening(addr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
