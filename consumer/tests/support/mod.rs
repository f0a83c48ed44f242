//! Test support shared by the consumer's integration tests (`mod support; use support::*;`):
//! fake Slack/Teams/webhook receivers, configuration files written for a test broker, sample
//! events made unique and an MQTT publisher, the consumer run in-process or as the real binary,
//! and fakes of the tenant's REST API, of its webhooks API and of an SMTP server.
//! Not every test binary uses every item.
#![allow(dead_code)]

pub mod config;
pub mod events;
pub mod fake_webhooks;
pub mod receivers;
pub mod run;
pub mod smtp_server;

/// The tenant API fake lives in `testkit`, so `scripts/demo.sh` can serve it too.
#[allow(unused_imports)]
pub use testkit::fake_tenant;

use std::time::Duration;

// What most tests use, by its name alone; a test binary that needs none of it does not say so.
#[allow(unused_imports)]
pub use {config::*, events::*, receivers::*, run::*};

pub const TENANT: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
pub const OTHER_TENANT: &str = "OtherTenant000000000000000000001";
pub const WAIT: Duration = Duration::from_secs(20);

/// Whether a Redis answers PING on 127.0.0.1:`port`.
pub fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_millis(500),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// True (with a message) when no Redis answers on 127.0.0.1:6379: the test is skipped.
pub fn skip_without_redis() -> bool {
    if redis_answers(6379) {
        return false;
    }
    eprintln!("SKIPPED: no Redis on 127.0.0.1:6379 (CI starts one: redis-server)");
    true
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}
