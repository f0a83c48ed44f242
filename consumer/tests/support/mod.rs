//! Test support shared by the consumer's integration tests (`mod support;`).
//! Not every test binary uses every item.
#![allow(dead_code)]

pub mod fake_tenant;
pub mod fake_webhooks;
pub mod smtp_server;
