//! `consumer run`: subscribe and alert until SIGINT / SIGTERM.

use anyhow::Context;

use consumer::exit;
use consumer::pipeline::{self, RunOptions};

use super::load;
use crate::ConfigArgs;

pub async fn run(args: &ConfigArgs) -> anyhow::Result<u8> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    pipeline::run(
        config,
        qlik_events::shutdown_signal(),
        RunOptions::default(),
    )
    .await
    .context("consumer run failed")?;
    Ok(exit::OK)
}
