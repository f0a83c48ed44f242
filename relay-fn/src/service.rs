//! One request, whatever carried it: decide, publish when accepted, log one line, answer.

use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use time::OffsetDateTime;

use crate::decision::{Policy, WebhookRequest, decide};
use crate::publisher::Publisher;

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
}

impl Relay {
    pub fn new(policy: Policy, publisher: Publisher) -> Arc<Self> {
        Arc::new(Self { policy, publisher })
    }

    pub async fn handle(&self, request: WebhookRequest<'_>) -> Reply {
        let started = Instant::now();
        let publication = match decide(&request, &self.policy, OffsetDateTime::now_utc()) {
            Ok(publication) => publication,
            Err(rejection) => {
                let status = rejection.status();
                tracing::warn!(
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
        let result = self
            .publisher
            .publish(&publication.topic, &publication.payload)
            .await;
        let latency_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(()) => {
                tracing::info!(
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
                tracing::error!(
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
