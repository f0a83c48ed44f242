//! The tests' fake Qlik Cloud tenant REST API ([`testkit::fake_tenant`]) on its own, for
//! `scripts/demo.sh`: it answers the consumer's calls (reload, script log, app, app tags, owner)
//! for the ids of the repository's samples, so the demo's alerts are whole.
//!
//! ```text
//! cargo run -q -p testkit --example fake-tenant -- --port N [--jwt TOKEN]
//! ```
//!
//! Listens on 127.0.0.1:N (0: a free port), accepts `Bearer TOKEN` (default: the tests' JWT,
//! [`testkit::fake_tenant::JWT`]) and prints one line once it listens:
//! `fake tenant API listening on http://127.0.0.1:<port>`. Runs until killed.

use testkit::fake_tenant::{FakeTenant, JWT, TenantData};

const USAGE: &str = "usage: fake-tenant --port N [--jwt TOKEN]";

fn usage(problem: &str) -> ! {
    eprintln!("fake-tenant: {problem}\n{USAGE}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let mut port = None;
    let mut jwt = JWT.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => {
                let value = args.next().unwrap_or_else(|| usage("--port needs a value"));
                port = Some(
                    value
                        .parse::<u16>()
                        .unwrap_or_else(|_| usage(&format!("not a port: {value}"))),
                );
            }
            "--jwt" => jwt = args.next().unwrap_or_else(|| usage("--jwt needs a value")),
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let port = port.unwrap_or_else(|| usage("--port is required"));
    let tenant = FakeTenant::start_on(port, TenantData::default()).await;
    tenant.set_jwt(&jwt);
    println!("fake tenant API listening on {}", tenant.url());
    std::future::pending::<()>().await;
}
