//! One module per `consumer` command; `main.rs` parses the command line and dispatches here.

pub mod check_config;
pub mod preview;
pub mod replay;
pub mod run;
pub mod session;
pub mod webhook;

use consumer::config::{self, ConsumerConfig};
use consumer::exit;

use crate::ConfigArgs;

/// Loads the configuration or prints every problem; `Err` carries the exit code.
pub fn load(args: &ConfigArgs) -> Result<ConsumerConfig, u8> {
    let extensions = args.extensions();
    config::load(&args.config, extensions.as_deref()).map_err(|errors| {
        eprintln!("{errors}");
        exit::CONFIG_INVALID
    })
}
