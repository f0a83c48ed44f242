//! What the Qlik Cloud relay and its consumer share: the webhook envelope in all its forms,
//! `Qlik-Signature` verification, MQTT topic routing, broker connection settings, and one MQTT
//! client for both protocol versions.
//!
//! Nothing here performs I/O except reading certificate files named in [`broker::TlsSettings`]
//! and the broker connections of [`mqtt`].

pub mod broker;
pub mod envelope;
pub mod mqtt;
pub mod shutdown;
pub mod signature;
pub mod topic;

pub use broker::{
    BrokerError, BrokerSettings, ClientIdentityPem, MAX_PACKET_BYTES, MqttVersion,
    PUBLISH_OVERHEAD_BYTES, TlsItem, TlsSettings, is_loopback_host, publish_fits,
};
pub use envelope::{
    APP_RELOAD_FINISHED, Envelope, EnvelopeError, EnvelopeFormat, RELOAD_FINISHED, ReloadEvent,
    ReloadEventKind, with_legacy_fields,
};
pub use shutdown::shutdown_signal;
pub use signature::{
    SIGNATURE_HEADER, SecretsError, SignatureError, VerifiedBody, WebhookSecrets, secret_value_eq,
    sign,
};
pub use topic::{TopicError, TopicRouting, TopicTemplate};
