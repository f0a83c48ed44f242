//! `consumer run`: subscribe and alert until SIGINT / SIGTERM.

use anyhow::Context;

use consumer::exit;
use consumer::pipeline::{self, RunError, RunOptions};

use super::load;
use crate::ConfigArgs;

pub async fn run(args: &ConfigArgs) -> anyhow::Result<u8> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    match pipeline::run(
        config,
        qlik_events::shutdown_signal(),
        RunOptions::default(),
    )
    .await
    {
        // A tenant id that cannot be resolved is a configuration problem, named by its key.
        Err(RunError::TenantId(problem)) => {
            tracing::error!("configuration invalid: {problem}");
            eprintln!("Configuration has 1 problem:\n  {problem}\nConfiguration NOT OK");
            Ok(exit::CONFIG_INVALID)
        }
        result => {
            result.context("consumer run failed")?;
            Ok(exit::OK)
        }
    }
}
