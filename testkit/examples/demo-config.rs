//! Prints the Butler file `scripts/demo.sh` runs the consumer with: one file, Butler's keys and
//! the consumer's together, as a Butler user may keep them.
//!
//! ```text
//! cargo run -q -p testkit --example demo-config -- <work dir> <MQTT port>
//! ```

use std::path::PathBuf;

use serde_json::json;
use testkit::butler::{Broker, Config, Tenant};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(work), Some(port)) = (args.next(), args.next()) else {
        eprintln!("usage: demo-config <work dir> <MQTT port>");
        std::process::exit(2);
    };
    let work = PathBuf::from(work);
    let port: u16 = port.parse().expect("the MQTT port is a number");
    // A tenant API that is not there: the alerts say what they could not fetch. The JWT comes
    // from QLIK_TENANT_JWT.
    let tenant = Tenant::new(
        "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ",
        "http://127.0.0.1:9",
        "<JWT token>",
    );
    let mut config = Config::new(&Broker::new("127.0.0.1", port), "qscloud", &tenant);
    config
        .tenant(
            "comment",
            "Demo tenant (its REST API is not reachable in the demo)",
        )
        .script_log(true, &work.join("scriptlogs"))
        // Plain TCP to the demo broker: `tls: false` is the consumer's extension key.
        .extension(
            "mqttConfig.qlikSenseCloud.event.mqttForward.broker",
            json!({"tls": false, "clientId": "qscloud-consumer-demo"}),
        )
        .consumer("stateDirectory", work.join("state").display().to_string())
        .consumer("enrichment", json!({"maxRetries": 0, "timeoutSeconds": 2}));
    print!("{}", config.one_file_yaml());
}
