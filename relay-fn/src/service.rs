//! One request, whatever carried it: decide, publish when accepted, log one line, answer.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use time::OffsetDateTime;

use crate::decision::{Policy, WebhookRequest, decide};
use crate::metrics::{Emf, Measure, now_ms};
use crate::prometheus::Exposition;
use crate::publisher::Publisher;

/// One request's log line; with EMF on, its metric members ride along in [`crate::logging::MERGE_FIELD`]
/// (`_emf`), which the JSON log writer merges into the line's root.
macro_rules! request_line {
    ($level:ident, $emf:expr, $($field:tt)+) => {
        match $emf {
            Some(members) => tracing::$level!(_emf = %members, $($field)+),
            None => tracing::$level!($($field)+),
        }
    };
}

/// The answer to Qlik: a status and a small JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: StatusCode,
    pub body: String,
}

impl Reply {
    fn json(status: StatusCode, value: serde_json::Value) -> Self {
        Self {
            status,
            body: value.to_string(),
        }
    }
}

pub struct Relay {
    pub policy: Policy,
    pub publisher: Publisher,
    /// CloudWatch metrics in the log lines (Lambda with JSON logs).
    pub metrics: Option<Emf>,
    /// Prometheus metrics, served at `/metrics` in HTTP mode (kept in Lambda too: a few
    /// atomic increments cost less than a second code path).
    pub exposition: Exposition,
}

impl Relay {
    pub fn new(policy: Policy, publisher: Publisher) -> Arc<Self> {
        Self::with_metrics(policy, publisher, None)
    }

    pub fn with_metrics(policy: Policy, publisher: Publisher, metrics: Option<Emf>) -> Arc<Self> {
        Arc::new(Self {
            policy,
            publisher,
            metrics,
            exposition: Exposition::new(),
        })
    }

    /// Counts `measure`, and returns its EMF members as JSON text when EMF is on.
    fn record(&self, measure: Measure<'_>) -> Option<String> {
        self.exposition.record(measure);
        let members = self.metrics.as_ref()?.members(measure, now_ms());
        Some(serde_json::Value::Object(members).to_string())
    }

    pub async fn handle(&self, request: WebhookRequest<'_>) -> Reply {
        let started = Instant::now();
        let publication = match decide(&request, &self.policy, OffsetDateTime::now_utc()) {
            Ok(publication) => publication,
            Err(rejection) => {
                let status = rejection.status();
                let emf = self.record(Measure::Rejected {
                    outcome: rejection.outcome(),
                });
                request_line!(
                    warn,
                    emf,
                    outcome = rejection.outcome(),
                    status = status.as_u16(),
                    reason = %rejection,
                    latency_ms = started.elapsed().as_millis() as u64,
                    "webhook rejected"
                );
                return Reply::json(
                    status,
                    serde_json::json!({ "error": rejection.public_message() }),
                );
            }
        };
        let publishing = Instant::now();
        let result = self
            .publisher
            .publish(&publication.topic, &publication.payload)
            .await;
        let publish_latency = publishing.elapsed();
        let latency_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                let emf = self.record(Measure::Relayed { publish_latency });
                request_line!(
                    info,
                    emf,
                    outcome = "published",
                    status = 200,
                    event_id = %publication.event_id,
                    event_type = %publication.event_type,
                    tenant = %publication.tenant_id,
                    envelope = publication.format.as_str(),
                    topic = %publication.topic,
                    bytes = publication.payload.len(),
                    latency_ms,
                    "webhook relayed"
                );
                Reply::json(
                    StatusCode::OK,
                    serde_json::json!({ "topic": publication.topic, "eventId": publication.event_id }),
                )
            }
            Err(error) => {
                // 503 makes Qlik record the delivery as failed, so it can be resent.
                let emf = self.record(Measure::BrokerUnavailable);
                request_line!(
                    error,
                    emf,
                    outcome = "broker_unavailable",
                    status = 503,
                    event_id = %publication.event_id,
                    event_type = %publication.event_type,
                    tenant = %publication.tenant_id,
                    topic = %publication.topic,
                    broker = %self.publisher.broker().display_url(),
                    error = %error,
                    latency_ms,
                    "webhook not relayed"
                );
                Reply::json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({ "error": "message broker unavailable; retry later" }),
                )
            }
        }
    }
}
