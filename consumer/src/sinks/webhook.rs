//! Generic outgoing webhook (extension `Butler.qlikSenseCloud.consumer.destinations.webhook[]`):
//! POSTs the alert as JSON ([`Alert::payload`]: Butler's template fields plus the event ids) with
//! the configured headers and an `Idempotency-Key` of the event id, so a receiver can drop the
//! duplicate that at-least-once delivery may produce.

use std::time::Duration;

use secrecy::SecretString;

use super::{Sink, SinkError, http};
use crate::alert::Alert;
use crate::config::{SecretUrl, WebhookDestination};

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub name: String,
    pub url: SecretUrl,
    pub headers: Vec<(String, SecretString)>,
    pub timeout: Duration,
    pub rate_limit: Duration,
}

impl From<&WebhookDestination> for WebhookConfig {
    fn from(d: &WebhookDestination) -> Self {
        Self {
            name: d.name.clone(),
            url: d.url.clone(),
            headers: d.headers.clone(),
            timeout: d.timeout,
            rate_limit: d.rate_limit,
        }
    }
}

pub struct WebhookSink {
    name: String,
    config: WebhookConfig,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig, client: reqwest::Client) -> Self {
        Self {
            name: format!("webhook:{}", config.name),
            config,
            client,
        }
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn rate_limit(&self) -> Duration {
        self.config.rate_limit
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let mut headers = self.config.headers.clone();
        headers.push((
            "Idempotency-Key".to_owned(),
            SecretString::from(alert.event_id.clone()),
        ));
        http::post_json(
            &self.client,
            &self.config.url,
            &alert.payload(),
            &headers,
            self.config.timeout,
        )
        .await
    }
}
