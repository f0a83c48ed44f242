//! `consumer run`: subscribe and alert until SIGINT / SIGTERM.

use anyhow::Context;

use consumer::exit;
use consumer::pipeline::{self, RunOptions};

use super::load;
use crate::ConfigArgs;

pub async fn run(args: &ConfigArgs) -> anyhow::Result<u8> {
    let extensions = args.extensions();
    // The first line of every run: which build reads which files, for whoever reads the log
    // after an upgrade.
    tracing::info!(
        config = %args.config.display(),
        extensions = %extensions.as_deref().map_or_else(|| "none".to_owned(), |p| p.display().to_string()),
        "consumer {} starting",
        env!("CARGO_PKG_VERSION")
    );
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    for warning in consumer::check::warnings(&config) {
        tracing::warn!(key = %warning.path, "{}", warning.message);
    }
    if config.broker.sends_credentials_in_clear() {
        tracing::warn!(
            broker = %config.broker.broker_settings().display_url(),
            "broker.allowPlaintext: true: the broker password and every event cross the network unencrypted"
        );
    }
    match pipeline::run(
        config,
        qlik_events::shutdown_signal(),
        RunOptions::default(),
    )
    .await
    {
        // What check-config reports as invalid stops `run` with the same exit code and the
        // same report, the problem named by its key.
        Err(e) if e.is_config_problem() => {
            tracing::error!("configuration invalid: {e}");
            eprintln!("Configuration has 1 problem:\n  {e}\nConfiguration NOT OK");
            Ok(exit::CONFIG_INVALID)
        }
        result => {
            result.context("consumer run failed")?;
            Ok(exit::OK)
        }
    }
}
