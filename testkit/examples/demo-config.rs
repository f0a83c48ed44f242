//! Prints the Butler file `scripts/demo.sh` runs the consumer with: one file, Butler's keys and
//! the consumer's together, as a Butler user may keep them.
//!
//! ```text
//! cargo run -q -p testkit --example demo-config -- <work dir> <MQTT port> <tenant URL> <JWT> [<alert webhook URL>]
//! ```
//!
//! The tenant URL and JWT are the demo's stand-in tenant API (the `fake-tenant` example); the
//! alert webhook URL, when given, is a generic webhook destination (the `alert-receiver`
//! example) that shows each whole alert.

use std::path::PathBuf;

use serde_json::json;
use testkit::butler::{Broker, Config, Tenant, Webhook};

const USAGE: &str =
    "usage: demo-config <work dir> <MQTT port> <tenant URL> <JWT> [<alert webhook URL>]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (work, port, tenant_url, jwt, alerts) = match args.as_slice() {
        [work, port, url, jwt] => (work, port, url, jwt, None),
        [work, port, url, jwt, alerts] => (work, port, url, jwt, Some(alerts)),
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let work = PathBuf::from(work);
    let port: u16 = port.parse().expect("the MQTT port is a number");
    // The tenant id of the repository's samples, as Qlik puts it in events.
    let tenant = Tenant::new("Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ", tenant_url, jwt);
    let mut config = Config::new(&Broker::new("127.0.0.1", port), "qscloud", &tenant);
    config
        .tenant(
            "comment",
            "Demo tenant (its REST API is the demo's stand-in)",
        )
        .script_log(true, &work.join("scriptlogs"))
        // Plain TCP to the demo broker: `tls: false` is the consumer's extension key.
        .extension(
            "mqttConfig.qlikSenseCloud.event.mqttForward.broker",
            json!({"tls": false, "clientId": "qscloud-consumer-demo"}),
        )
        .consumer("stateDirectory", work.join("state").display().to_string())
        .consumer("enrichment", json!({"maxRetries": 0, "timeoutSeconds": 2}));
    if let Some(url) = alerts {
        config.webhook(&Webhook::new("demo-receiver", url));
    }
    print!("{}", config.one_file_yaml());
}
