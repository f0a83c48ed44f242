//! The consumer as a library, so integration tests can drive its parts.

pub mod config;
pub mod enrich;
