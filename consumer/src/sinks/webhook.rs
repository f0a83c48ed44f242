//! Generic outgoing webhook (extension `Butler.qlikSenseCloud.consumer.destinations.webhook[]`):
//! POSTs the alert as JSON ([`Alert::payload`]: Butler's template fields plus the event ids) with
//! the configured headers and an `Idempotency-Key` derived from the tenant and event id, so a
//! receiver can drop the duplicate that at-least-once delivery may produce.
//!
//! The key is a hash ([`idempotency_key`]), not the event id itself: an event id is whatever
//! the publisher wrote, and one with a line break or a control character would make the header
//! invalid and the alert undeliverable. Configured header values are checked when the file is
//! read, for the same reason.
//!
//! A receiver is a program that may want every alert on its own, so a webhook folds alert storms
//! into digests only with a `digest` block of its own ([`crate::digest`]); the digest is then
//! POSTed as [`crate::alert::digest_payload`], with the same headers.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::{
    BuildError, Context, Destination, Kind, Preview, SharedSink, Sink, SinkError, http,
};
use crate::alert::Alert;
use crate::settings::{Node, Problems, SecretUrl, parse_digest_settings, rate_limit};
use crate::digest::DigestSettings;

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
    /// `digest` (`afterAlerts`, `windowSeconds`): fold alert storms; `None` (absent): never.
    pub digest: Option<DigestSettings>,
}

/// A machine destination's own `digest` block, when present.
pub(crate) fn parse_digest(node: &Node<'_>, p: &mut Problems) -> Option<DigestSettings> {
    let digest = node.child("digest");
    if !digest.is_present() {
        return None;
    }
    digest.expect_map(p, false);
    Some(parse_digest_settings(&digest, p))
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
            let digest = parse_digest(&w, p);
            Some(Arc::new(WebhookDestination {
                name,
                url: SecretUrl::new(url?),
                headers,
                timeout,
                rate_limit,
                digest,
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

/// `, digest after N alerts in Ns` for `check-config`, or nothing.
pub(crate) fn digest_summary(digest: Option<DigestSettings>) -> String {
    digest.map_or_else(String::new, |d| {
        format!(
            ", digest after {} alerts in {}s",
            d.after_alerts,
            d.window.as_secs()
        )
    })
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
    fn sink_name(&self) -> String {
        format!("webhook:{}", self.name)
    }

    fn summary(&self, _config: &Context<'_>) -> Option<String> {
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
            "webhook \"{}\" → {}{headers}{}",
            self.name,
            self.url.masked(),
            digest_summary(self.digest)
        ))
    }

    fn build(
        &self,
        config: &Context<'_>,
        client: &reqwest::Client,
    ) -> Result<SharedSink, BuildError> {
        let mut destination = self.clone();
        // `consumer.digest.enable: false` turns digests off everywhere, own blocks included.
        destination.digest = self.digest.filter(|_| config.digest.enable);
        Ok(Arc::new(WebhookSink::new(destination, client.clone())))
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
            name: config.sink_name(),
            config,
            client,
        }
    }
}

impl WebhookSink {
    /// What is posted for an alert: the JSON body and the headers (the configured ones, then
    /// `Idempotency-Key`).
    fn request(&self, alert: &Alert) -> (serde_json::Value, Vec<(String, SecretString)>) {
        let mut headers = self.config.headers.clone();
        headers.push((
            "Idempotency-Key".to_owned(),
            SecretString::from(idempotency_key(alert)),
        ));
        (alert.payload(), headers)
    }
}

impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn rate_limit(&self) -> Duration {
        self.config.rate_limit
    }

    fn digest(&self) -> Option<DigestSettings> {
        self.config.digest
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        let (body, headers) = self.request(alert);
        http::post_json(
            &self.client,
            &self.config.url,
            &body,
            &headers,
            self.config.timeout,
        )
        .await
    }

    /// The body and the header names; the values stay unshown (they may be secrets).
    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        let (body, headers) = self.request(alert);
        Ok(Preview::Http {
            body,
            header_names: headers.into_iter().map(|(name, _)| name).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::HeaderMap;
    use axum::routing::post;

    use super::*;
    use crate::settings::SecretUrl;

    fn alert(event_id: &str) -> Alert {
        Alert::sample(event_id, "tenant")
    }

    /// An event id is whatever the publisher wrote: one with a line break must not make the
    /// alert undeliverable (nor add a header).
    type Seen = Arc<Mutex<Vec<(HeaderMap, serde_json::Value)>>>;

    /// A webhook receiver on 127.0.0.1 that answers 200 and keeps each request's headers and
    /// JSON body.
    async fn receiver() -> (std::net::SocketAddr, Seen) {
        let seen: Seen = Arc::default();
        let record = seen.clone();
        let app = Router::new().route(
            "/",
            post(move |headers: HeaderMap, body: String| {
                let record = record.clone();
                async move {
                    let body = serde_json::from_str(&body).unwrap_or_default();
                    if let Ok(mut record) = record.lock() {
                        record.push((headers, body));
                    }
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, seen)
    }

    fn sink_to(
        addr: std::net::SocketAddr,
        headers: Vec<(String, SecretString)>,
        digest: Option<crate::digest::DigestSettings>,
    ) -> WebhookSink {
        WebhookSink::new(
            WebhookDestination {
                name: "w".into(),
                url: SecretUrl::new(url::Url::parse(&format!("http://{addr}/")).expect("url")),
                headers,
                timeout: Duration::from_secs(5),
                rate_limit: Duration::ZERO,
                digest,
            },
            http::client().expect("client"),
        )
    }

    #[tokio::test]
    async fn any_event_id_gives_a_valid_idempotency_key() {
        let (addr, seen) = receiver().await;
        let sink = sink_to(addr, vec![], None);
        for id in ["e1\r\nX-Evil: 1", "e\u{0}2", "plain-id"] {
            sink.send(&alert(id)).await.expect("delivered");
        }
        sink.send(&alert("plain-id")).await.expect("delivered");
        let seen = seen.lock().expect("lock").clone();
        assert!(seen.iter().all(|(h, _)| !h.contains_key("x-evil")));
        let keys: Vec<String> = seen
            .iter()
            .map(|(h, _)| {
                h.get("idempotency-key")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect();
        assert_eq!(keys.len(), 4);
        assert!(keys.iter().all(|k| k.len() == 64), "{keys:?}");
        assert_eq!(keys[2], keys[3], "stable per event");
        assert_ne!(keys[0], keys[1]);
        assert_eq!(keys[2], idempotency_key(&alert("plain-id")));
    }

    fn digest() -> crate::digest::Digest {
        let entry = |i: usize| crate::digest::DigestEntry {
            event_id: format!("e{i}"),
            tenant_id: "tenant".into(),
            tenant_comment: None,
            app_id: Some(format!("a{i}")),
            app_name: format!("App <{i}>"),
            app_url: Some(format!("https://t.example/sense/app/a{i}")),
            reload_id: Some(format!("r{i}")),
            time: Some("2026-03-02T07:06:22Z".into()),
            error_line: "Field not found".into(),
        };
        crate::digest::split("1772435100000", "s", "e", vec![entry(1), entry(2)], |_| true)
            .remove(0)
    }

    #[tokio::test]
    async fn a_digest_is_posted_as_the_digest_payload_with_the_same_headers() {
        let (addr, seen) = receiver().await;
        let settings = crate::digest::DigestSettings {
            after_alerts: 5,
            window: Duration::from_secs(30),
        };
        let sink = sink_to(
            addr,
            vec![("Authorization".into(), SecretString::from("Bearer x"))],
            Some(settings),
        );
        assert_eq!(sink.digest(), Some(settings));
        let alert = Alert::for_digest("tenant", None, digest());
        sink.send(&alert).await.expect("delivered");
        let seen = seen.lock().expect("lock").clone();
        let (headers, body) = &seen[0];
        assert_eq!(headers["authorization"], "Bearer x");
        assert_eq!(
            headers["idempotency-key"].to_str().expect("ASCII"),
            idempotency_key(&alert)
        );
        let keys: Vec<&str> = body
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = [
            "eventType",
            "window",
            "windowStart",
            "windowEnd",
            "total",
            "part",
            "parts",
            "alerts",
        ];
        expected.sort_unstable();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, expected);
        assert_eq!(body["eventType"], crate::digest::DIGEST_EVENT_TYPE);
        assert_eq!(body["window"], "1772435100000");
        assert_eq!((body["total"].as_u64(), body["part"].as_u64()), (Some(2), Some(1)));
        // Values as the event gave them: a receiver is not a markup reader.
        assert_eq!(
            body["alerts"][1],
            serde_json::json!({
                "eventId": "e2", "tenantId": "tenant", "appId": "a2", "appName": "App <2>",
                "appUrl": "https://t.example/sense/app/a2", "reloadId": "r2",
                "time": "2026-03-02T07:06:22Z", "errorLine": "Field not found"
            })
        );
    }

    #[test]
    fn refuses_notices() {
        let sink = sink_to(([127, 0, 0, 1], 9).into(), vec![], None);
        let notice = Alert::sample_notice();
        assert!(!sink.accepts(&notice));
        assert!(sink.accepts(&alert("e1")));
    }
}
