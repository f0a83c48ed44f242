//! Generic outgoing webhook (extension `Butler.qlikSenseCloud.consumer.destinations.webhook[]`):
//! POSTs the alert as JSON ([`Alert::payload`]: Butler's template fields plus the event ids) with
//! the configured headers and an `Idempotency-Key` derived from the tenant and event id, so a
//! receiver can drop the duplicate that at-least-once delivery may produce.
//!
//! The key is a hash ([`idempotency_key`]), not the event id itself: an event id is whatever
//! the publisher wrote, and one with a line break or a control character would make the header
//! invalid and the alert undeliverable. Configured header values are checked when the file is
//! read, for the same reason.

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
    if reqwest::header::HeaderValue::from_str(&value).is_err() {
        p.add(
            format!("{}.value", h.path),
            "is not a valid HTTP header value (line breaks and control characters are not allowed)",
        );
        return None;
    }
    Some((name, SecretString::from(value)))
}

/// `Idempotency-Key`: hex SHA-256 of tenant and event id. The same for every retry and replay
/// of an alert, different for every event, and a valid header value whatever the ids hold.
pub fn idempotency_key(alert: &Alert) -> String {
    idempotency_key_for(&alert.tenant_id, &alert.event_id)
}

/// [`idempotency_key`] from the ids, for a receiver (or test) that recomputes it.
pub fn idempotency_key_for(tenant_id: &str, event_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{tenant_id}\n{event_id}"));
    digest.iter().map(|b| format!("{b:02x}")).collect()
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
            SecretString::from(idempotency_key(alert)),
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::post;

    use super::*;
    use crate::config::SecretUrl;

    fn alert(event_id: &str) -> Alert {
        Alert {
            event_id: event_id.into(),
            event_type: "t".into(),
            tenant_id: "tenant".into(),
            app_id: None,
            reload_id: None,
            event_time: None,
            app_tags: vec![],
            script_log: None,
            context: Default::default(),
            recipient: None,
            digest: None,
        }
    }

    /// An event id is whatever the publisher wrote: one with a line break must not make the
    /// alert undeliverable (nor add a header).
    #[tokio::test]
    async fn any_event_id_gives_a_valid_idempotency_key() {
        let keys: Arc<Mutex<Vec<String>>> = Arc::default();
        let seen = keys.clone();
        let app = Router::new().route(
            "/",
            post(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    if let Ok(mut seen) = seen.lock() {
                        seen.push(key);
                    }
                    assert!(!headers.contains_key("x-evil"));
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let sink = WebhookSink::new(
            WebhookDestination {
                name: "w".into(),
                url: SecretUrl::new(url::Url::parse(&format!("http://{addr}/")).expect("url")),
                headers: vec![],
                timeout: Duration::from_secs(5),
                rate_limit: Duration::ZERO,
            },
            http::client().expect("client"),
        );
        for id in ["e1\r\nX-Evil: 1", "e\u{0}2", "plain-id"] {
            sink.send(&alert(id)).await.expect("delivered");
        }
        sink.send(&alert("plain-id")).await.expect("delivered");
        let keys = keys.lock().expect("lock").clone();
        assert_eq!(keys.len(), 4);
        assert!(keys.iter().all(|k| k.len() == 64), "{keys:?}");
        assert_eq!(keys[2], keys[3], "stable per event");
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[2], idempotency_key(&alert("plain-id")));
    }
}
