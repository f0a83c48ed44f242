//! The relay as a library, so its parts are tested on their own and the binary stays a shell.

pub mod config;
pub mod decision;
pub mod env;
pub mod http_server;
pub mod lambda;
pub mod logging;
pub mod metrics;
pub mod prometheus;
pub mod publisher;
pub mod secrets;
pub mod service;
