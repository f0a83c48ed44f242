//! Generic outgoing webhook (extension `Butler.qlikSenseCloud.consumer.destinations.webhook[]`):
//! POSTs the alert as JSON ([`Alert::payload`]: Butler's template fields plus the event ids) with
//! the configured headers and an `Idempotency-Key` of the event id, so a receiver can drop the
//! duplicate that at-least-once delivery may produce.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::{BuildError, Destination, Kind, SharedSink, Sink, SinkError, http};
use crate::alert::Alert;
use crate::config::{ConsumerConfig, Node, Problems, SecretUrl, rate_limit};

pub(crate) const KIND: Kind = Kind::Global(parse);

/// One entry of `webhook`: a generic outgoing webhook.
#[derive(Debug, Clone)]
pub struct WebhookDestination {
    /// `name` (default `webhook-<n>`): used in logs and parked-alert file names.
    pub name: String,
    /// `url`: https, or http on a loopback host. Masked in output (it may embed a token).
    pub url: SecretUrl,
    /// `headers`: extra request headers; values are secrets (often `Authorization`).
    pub headers: Vec<(String, SecretString)>,
    /// `timeoutSeconds` (default 10).
    pub timeout: Duration,
    /// `rateLimit` seconds per app (default 0: none).
    pub rate_limit: Duration,
}

fn parse(butler: &Node<'_>, p: &mut Problems) -> Vec<Arc<dyn Destination>> {
    super::extension_key(butler, "webhook")
        .items(p)
        .into_iter()
        .enumerate()
        .filter_map(|(i, w)| {
            if !w.expect_map(p, true) || !w.child("enable").bool_or(p, true) {
                return None;
            }
            let name = w
                .child("name")
                .opt_string(p)
                .unwrap_or_else(|| format!("webhook-{}", i + 1));
            let url = w.child("url").url(p, true);
            let headers = w
                .child("headers")
                .items(p)
                .into_iter()
                .filter_map(|h| parse_header(&h, p))
                .collect();
            let timeout = Duration::from_secs(w.child("timeoutSeconds").u64_or(
                p,
                http::DEFAULT_TIMEOUT.as_secs(),
                1,
                300,
            ));
            let rate_limit = rate_limit(&w, 0, p);
            Some(Arc::new(WebhookDestination {
                name,
                url: SecretUrl::new(url?),
                headers,
                timeout,
                rate_limit,
            }) as Arc<dyn Destination>)
        })
        .collect()
}

fn parse_header(h: &Node<'_>, p: &mut Problems) -> Option<(String, SecretString)> {
    if !h.expect_map(p, true) {
        return None;
    }
    let name = h.child("name").string(p)?;
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        p.add(
            format!("{}.name", h.path),
            format!("`{name}` is not a valid HTTP header name"),
        );
        return None;
    }
    // The value is a secret: never quote it.
    let value = h.child("value").string(p)?;
    Some((name, SecretString::from(value)))
}

impl Destination for WebhookDestination {
    fn summary(&self, _config: &ConsumerConfig) -> Option<String> {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: ***"))
            .collect();
        let headers = if headers.is_empty() {
            String::new()
        } else {
            format!(" (headers {})", headers.join(", "))
        };
        Some(format!(
            "webhook \"{}\" → {}{headers}",
            self.name,
            self.url.masked()
        ))
    }

    fn build(
        &self,
        _config: &ConsumerConfig,
        client: &reqwest::Client,
    ) -> Result<SharedSink, BuildError> {
        Ok(Arc::new(WebhookSink::new(self.clone(), client.clone())))
    }
}

pub struct WebhookSink {
    name: String,
    config: WebhookDestination,
    client: reqwest::Client,
}

impl WebhookSink {
    pub fn new(config: WebhookDestination, client: reqwest::Client) -> Self {
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
