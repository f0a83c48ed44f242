//! The `/api/v1/webhooks` calls, Qlik's error shape, and pagination through `links.next.href`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use super::Webhook;
use crate::config::{EnrichmentConfig, TenantConfig};
use crate::enrich::{TenantClient, retry_after, retryable};

/// Answers are small lists; anything bigger is not what we asked for.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Page size asked for (Qlik's maximum).
const PAGE_LIMIT: &str = "100";
/// A runaway `next` chain stops here.
const MAX_PAGES: usize = 10_000;

/// One entry of Qlik's error body `{"errors": [{"code", "title", "detail", "status"}], "traceId"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QlikError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<QlikError>,
    #[serde(default, rename = "traceId")]
    trace_id: Option<String>,
}

/// What kind of failure, for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookErrorKind {
    /// 404: no such webhook or delivery.
    NotFound,
    /// 401: the tenant did not accept the JWT.
    Unauthorized,
    /// 403: the JWT's user lacks the rights.
    Forbidden,
    /// 400, 409, 422: Qlik refused the request as invalid (its message says why).
    Rejected,
    /// Anything else: unreachable, timeouts, 5xx after retries, an unexpected answer.
    Other,
}

/// A failed webhook API call. Never contains the JWT (only ever sent in a header marked
/// sensitive) or the webhook secret (only ever in a request body, never quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("{what}: {}", status_message(*.status, .errors, .excerpt.as_deref(), .trace_id.as_deref(), *.attempts))]
    Status {
        what: String,
        status: u16,
        errors: Vec<QlikError>,
        /// The start of a body that was not Qlik's error JSON.
        excerpt: Option<String>,
        trace_id: Option<String>,
        attempts: u32,
    },
    #[error("{what}: no answer within the timeout after {attempts} attempt(s)")]
    Timeout { what: String, attempts: u32 },
    #[error("{what}: request failed after {attempts} attempt(s): {message}")]
    Transport {
        what: String,
        attempts: u32,
        message: String,
    },
    #[error("{what}: unexpected answer: {message}")]
    Body { what: String, message: String },
    #[error(
        "{what}: the next-page link leads away from the tenant ({origin}); not followed, so the JWT is not sent there"
    )]
    ForeignLink { what: String, origin: String },
    #[error("cannot set up the tenant API client: {0}")]
    Client(String),
}

impl WebhookError {
    pub fn kind(&self) -> WebhookErrorKind {
        match self {
            WebhookError::Status { status, .. } => match status {
                404 => WebhookErrorKind::NotFound,
                401 => WebhookErrorKind::Unauthorized,
                403 => WebhookErrorKind::Forbidden,
                400 | 409 | 422 => WebhookErrorKind::Rejected,
                _ => WebhookErrorKind::Other,
            },
            _ => WebhookErrorKind::Other,
        }
    }

    /// The HTTP status, when the tenant answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            WebhookError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn status_message(
    status: u16,
    errors: &[QlikError],
    excerpt: Option<&str>,
    trace_id: Option<&str>,
    attempts: u32,
) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!("HTTP {status} {reason}").trim_end().to_owned();
    let details: Vec<String> = errors
        .iter()
        .map(|e| {
            let mut one = String::new();
            // A title that only repeats the reason phrase adds nothing.
            if let Some(title) = e
                .title
                .as_deref()
                .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(reason))
            {
                one.push_str(title);
            }
            if let Some(detail) = e
                .detail
                .as_deref()
                .filter(|d| !d.is_empty() && e.title.as_deref() != Some(*d))
            {
                if !one.is_empty() {
                    one.push_str(": ");
                }
                one.push_str(detail);
            }
            if let Some(code) = e.code.as_deref().filter(|c| !c.is_empty()) {
                if one.is_empty() {
                    let _ = write!(one, "(code {code})");
                } else {
                    let _ = write!(one, " (code {code})");
                }
            }
            one
        })
        .filter(|s| !s.is_empty())
        .collect();
    if !details.is_empty() {
        let sep = if details.iter().all(|d| d.starts_with("(code ")) {
            " "
        } else {
            ": "
        };
        let _ = write!(out, "{sep}{}", details.join("; "));
    } else if let Some(excerpt) = excerpt {
        let _ = write!(out, ": {excerpt}");
    }
    match status {
        401 => out.push_str(
            ". The tenant did not accept the JWT (expired, revoked, or issued for another tenant): \
             check auth.jwt.token or QLIK_TENANT_JWT / QLIK_TENANT_JWT_<TENANTID>",
        ),
        403 => out.push_str(
            ". The JWT was accepted but its user lacks the rights for this: managing tenant-level \
             webhooks needs the TenantAdmin role (or create a user-level webhook with --level user)",
        ),
        429 | 500..=599 if attempts > 1 => {
            let _ = write!(
                out,
                " (after {attempts} attempts; the tenant API is busy or failing: try again later)"
            );
        }
        _ => {}
    }
    if let Some(trace) = trace_id {
        let _ = write!(out, " [traceId {trace}]");
    }
    out
}

/// A webhook to create. The secret is only exposed when the request body is built.
#[derive(Debug, Clone)]
pub struct NewWebhook {
    pub name: String,
    pub description: Option<String>,
    pub url: String,
    pub event_types: Vec<String>,
    pub filter: Option<String>,
    pub secret: SecretString,
    pub enabled: bool,
    /// `tenant` (every app of the tenant; needs TenantAdmin) or `user`.
    pub level: String,
    /// Headers Qlik adds to every delivery, stored encrypted by Qlik (`encryptedHeaders`).
    pub encrypted_headers: BTreeMap<String, SecretString>,
}

impl NewWebhook {
    fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({
            "name": self.name,
            "url": self.url,
            "eventTypes": self.event_types,
            "secret": self.secret.expose_secret(),
            "enabled": self.enabled,
            "level": self.level,
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(description) = &self.description {
                map.insert("description".into(), description.clone().into());
            }
            if let Some(filter) = &self.filter {
                map.insert("filter".into(), filter.clone().into());
            }
            if !self.encrypted_headers.is_empty() {
                let headers: serde_json::Map<String, serde_json::Value> = self
                    .encrypted_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.expose_secret().into()))
                    .collect();
                map.insert("encryptedHeaders".into(), headers.into());
            }
        }
        body
    }
}

/// One delivery of a webhook (`GET /api/v1/webhooks/{id}/deliveries`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub id: String,
    /// `success` or `fail`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub triggered_at: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub status_message: Option<String>,
    #[serde(default)]
    pub response: Option<DeliveryResponse>,
    #[serde(default)]
    pub request: Option<DeliveryRequest>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryResponse {
    #[serde(default)]
    pub status_code: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DeliveryRequest {
    /// The payload sent: the event envelope.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
}

impl Delivery {
    pub fn failed(&self) -> bool {
        self.status.eq_ignore_ascii_case("fail") || self.status.eq_ignore_ascii_case("failed")
    }

    pub fn succeeded(&self) -> bool {
        self.status.eq_ignore_ascii_case("success")
    }

    pub fn triggered(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.triggered_at, &Rfc3339).ok()
    }

    /// The HTTP status the receiver answered, when Qlik recorded one.
    pub fn response_status(&self) -> Option<u16> {
        self.response
            .as_ref()
            .and_then(|r| r.status_code)
            .filter(|c| (0.0..1000.0).contains(c))
            .map(|c| c as u16)
    }

    /// The event id in the delivered payload (CloudEvents `id`, legacy `eventId`), when the
    /// tenant included the request body.
    pub fn event_id(&self) -> Option<String> {
        self.request
            .as_ref()
            .and_then(|r| r.body.as_ref())
            .and_then(event_id_of)
    }
}

/// The event id of an envelope: CloudEvents `id`, else legacy `eventId`.
pub fn event_id_of(body: &serde_json::Value) -> Option<String> {
    ["id", "eventId"]
        .iter()
        .find_map(|k| body.get(*k).and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[derive(Deserialize)]
struct Page<T> {
    #[serde(default = "Vec::new")]
    data: Vec<T>,
    #[serde(default)]
    links: Option<Links>,
}

#[derive(Deserialize)]
struct Links {
    #[serde(default)]
    next: Option<Link>,
}

#[derive(Deserialize)]
struct Link {
    #[serde(default)]
    href: Option<String>,
}

/// The webhooks API of one tenant.
#[derive(Debug, Clone)]
pub struct WebhooksApi {
    client: TenantClient,
}

impl WebhooksApi {
    /// Uses the tenant's URL and JWT, and the timeouts and retry settings of
    /// `consumer.enrichment` (whether enrichment is enabled does not matter here).
    pub fn new(tenant: &TenantConfig, settings: &EnrichmentConfig) -> Result<Self, WebhookError> {
        let client =
            TenantClient::new(tenant, settings).map_err(|e| WebhookError::Client(e.to_string()))?;
        Ok(Self { client })
    }

    pub fn tenant_id(&self) -> &str {
        self.client.tenant_id()
    }

    /// `GET /api/v1/webhooks`, every page.
    pub async fn list(&self) -> Result<Vec<Webhook>, WebhookError> {
        let mut url = self.client.url(&["webhooks"]);
        url.query_pairs_mut().append_pair("limit", PAGE_LIMIT);
        self.pages(url, "listing webhooks", |_: &[Webhook]| true)
            .await
    }

    /// `GET /api/v1/webhooks/{id}`.
    pub async fn get(&self, id: &str) -> Result<Webhook, WebhookError> {
        let what = format!("reading webhook {id}");
        let body = self
            .send(Method::GET, self.client.url(&["webhooks", id]), None, &what)
            .await?;
        parse(&body, &what)
    }

    /// `POST /api/v1/webhooks`.
    pub async fn create(&self, hook: &NewWebhook) -> Result<Webhook, WebhookError> {
        let what = format!("creating webhook \"{}\"", hook.name);
        let body = self
            .send(
                Method::POST,
                self.client.url(&["webhooks"]),
                Some(hook.body()),
                &what,
            )
            .await?;
        parse(&body, &what)
    }

    /// `DELETE /api/v1/webhooks/{id}`.
    pub async fn delete(&self, id: &str) -> Result<(), WebhookError> {
        let what = format!("deleting webhook {id}");
        self.send(
            Method::DELETE,
            self.client.url(&["webhooks", id]),
            None,
            &what,
        )
        .await
        .map(drop)
    }

    /// `PATCH /api/v1/webhooks/{id}` replacing `/enabled`.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<(), WebhookError> {
        let what = format!(
            "{} webhook {id}",
            if enabled { "enabling" } else { "disabling" }
        );
        let patch = serde_json::json!([{"op": "replace", "path": "/enabled", "value": enabled}]);
        self.send(
            Method::PATCH,
            self.client.url(&["webhooks", id]),
            Some(patch),
            &what,
        )
        .await
        .map(drop)
    }

    /// `GET /api/v1/webhooks/{id}/deliveries`, newest first, every page back to `cutoff`: the
    /// deliveries triggered at or after it (any status).
    pub async fn deliveries_since(
        &self,
        id: &str,
        cutoff: OffsetDateTime,
    ) -> Result<Vec<Delivery>, WebhookError> {
        let mut url = self.client.url(&["webhooks", id, "deliveries"]);
        url.query_pairs_mut()
            .append_pair("sort", "-triggeredAt")
            .append_pair("limit", PAGE_LIMIT);
        let what = format!("listing deliveries of webhook {id}");
        // Newest first: once a page reaches past the cutoff, later pages are older still.
        let all = self
            .pages(url, &what, |page: &[Delivery]| {
                !page
                    .iter()
                    .filter_map(Delivery::triggered)
                    .any(|t| t < cutoff)
            })
            .await?;
        Ok(all
            .into_iter()
            .filter(|d| d.triggered().is_some_and(|t| t >= cutoff))
            .collect())
    }

    /// `POST /api/v1/webhooks/{id}/deliveries/{deliveryId}/actions/resend`.
    pub async fn resend(&self, id: &str, delivery_id: &str) -> Result<(), WebhookError> {
        let what = format!("resending delivery {delivery_id} of webhook {id}");
        let url = self.client.url(&[
            "webhooks",
            id,
            "deliveries",
            delivery_id,
            "actions",
            "resend",
        ]);
        self.send(Method::POST, url, None, &what).await.map(drop)
    }

    /// Follows `links.next.href` while `more` says the last page is worth continuing from.
    async fn pages<T: DeserializeOwned>(
        &self,
        first: Url,
        what: &str,
        more: impl Fn(&[T]) -> bool,
    ) -> Result<Vec<T>, WebhookError> {
        let mut out = Vec::new();
        let mut next = Some(first);
        let mut seen: Vec<String> = Vec::new();
        while let Some(url) = next.take() {
            if seen.len() >= MAX_PAGES || seen.iter().any(|u| u == url.as_str()) {
                break;
            }
            seen.push(url.as_str().to_owned());
            let body = self.send(Method::GET, url, None, what).await?;
            let page: Page<T> = parse(&body, what)?;
            let go_on = more(&page.data) && !page.data.is_empty();
            out.extend(page.data);
            if !go_on {
                break;
            }
            if let Some(href) = page
                .links
                .and_then(|l| l.next)
                .and_then(|n| n.href)
                .filter(|h| !h.is_empty())
            {
                next = Some(self.same_tenant(&href, what)?);
            }
        }
        Ok(out)
    }

    /// Resolves a `next` link against the tenant URL; it must stay on the tenant (scheme, host
    /// and port), since the JWT goes with it.
    fn same_tenant(&self, href: &str, what: &str) -> Result<Url, WebhookError> {
        let base = self.client.base();
        let url = base.join(href).map_err(|e| WebhookError::Body {
            what: what.to_owned(),
            message: format!("next-page link is not a URL: {e}"),
        })?;
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(WebhookError::ForeignLink {
                what: what.to_owned(),
                origin: url.origin().ascii_serialization(),
            });
        }
        Ok(url)
    }

    /// One call with retries: GET, DELETE and PATCH (idempotent) on 408, 429, 5xx, timeouts
    /// and connection errors; POST (creates, resends) only on 429 and when the connection could
    /// not be made, so that a request the tenant may have carried out is not repeated.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<Vec<u8>, WebhookError> {
        let idempotent = method != Method::POST;
        let payload = match &body {
            Some(value) => Some(serde_json::to_vec(value).map_err(|e| WebhookError::Body {
                what: what.to_owned(),
                message: e.to_string(),
            })?),
            None => None,
        };
        drop(body);
        let max_attempts = self.client.settings().max_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .client
                .request(method.clone(), url.clone())
                .header(ACCEPT, "application/json");
            if let Some(bytes) = &payload {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            let (error, retry_after, may_retry) = match request.send().await {
                Ok(response) if response.status().is_success() => {
                    match read_limited(response).await {
                        Ok(bytes) => return Ok(bytes),
                        Err(e) => (self.transport(what, attempt, e), None, idempotent),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let after = retry_after(response.headers());
                    let body = read_limited(response).await.unwrap_or_default();
                    let error = status_error(what, status, &body, attempt);
                    let may_retry = retryable(status)
                        && (idempotent || status == StatusCode::TOO_MANY_REQUESTS);
                    (error, after, may_retry)
                }
                Err(e) => {
                    let connect = e.is_connect();
                    (
                        self.transport(what, attempt, e),
                        None,
                        idempotent || connect,
                    )
                }
            };
            if !may_retry || attempt >= max_attempts {
                return Err(error);
            }
            let delay = self.client.retry_delay(attempt, retry_after);
            tracing::debug!(
                tenant = %self.client.tenant_id(),
                path = url.path(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "tenant webhooks API call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    fn transport(&self, what: &str, attempts: u32, e: reqwest::Error) -> WebhookError {
        if e.is_timeout() {
            WebhookError::Timeout {
                what: what.to_owned(),
                attempts,
            }
        } else {
            WebhookError::Transport {
                what: what.to_owned(),
                attempts,
                message: describe(e),
            }
        }
    }
}

/// The error and its sources, without the URL (the message says what was being done).
fn describe(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let _ = write!(text, ": {s}");
        source = s.source();
    }
    text
}

fn status_error(what: &str, status: StatusCode, body: &[u8], attempts: u32) -> WebhookError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (errors, trace_id) = match parsed {
        Some(b) => (b.errors, b.trace_id),
        None => (Vec::new(), None),
    };
    let excerpt = if errors.is_empty() && !body.is_empty() {
        let text: String = String::from_utf8_lossy(body)
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    } else {
        None
    };
    WebhookError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        errors,
        excerpt,
        trace_id,
        attempts,
    }
}

fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::Body {
        what: what.to_owned(),
        message: format!("not the JSON Qlik documents: {e}"),
    })
}

async fn read_limited(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qlik_errors_are_spelled_out() {
        let body = br#"{"errors":[{"code":"WEBHOOK-9","title":"Invalid filter","detail":"data.status cannot be combined","status":"400"}],"traceId":"abc"}"#;
        let e = status_error("creating webhook \"x\"", StatusCode::BAD_REQUEST, body, 1);
        assert_eq!(
            e.to_string(),
            "creating webhook \"x\": HTTP 400 Bad Request: Invalid filter: data.status cannot be combined (code WEBHOOK-9) [traceId abc]"
        );
        assert_eq!(e.kind(), WebhookErrorKind::Rejected);
        let forbidden = br#"{"errors":[{"code":"HTTP-403","title":"Forbidden","status":"403"}]}"#;
        let e = status_error("listing webhooks", StatusCode::FORBIDDEN, forbidden, 1);
        assert!(
            e.to_string()
                .starts_with("listing webhooks: HTTP 403 Forbidden (code HTTP-403). The JWT"),
            "{e}"
        );
        assert!(e.to_string().contains("TenantAdmin"), "{e}");
        assert_eq!(e.kind(), WebhookErrorKind::Forbidden);
        let e = status_error(
            "x",
            StatusCode::BAD_GATEWAY,
            b"<html>\n<b>bad</b></html>",
            4,
        );
        assert!(e.to_string().contains("<html> <b>bad</b></html>"), "{e}");
        assert!(e.to_string().contains("after 4 attempts"), "{e}");
    }

    #[test]
    fn new_webhook_body_and_debug() {
        let hook = NewWebhook {
            name: "n".into(),
            description: None,
            url: "https://relay.example/".into(),
            event_types: vec![super::super::APP_RELOAD_FINISHED.into()],
            filter: Some(super::super::FAILED_APP_RELOADS_FILTER.into()),
            secret: SecretString::from("x".repeat(40)),
            enabled: true,
            level: "tenant".into(),
            encrypted_headers: BTreeMap::from([(
                "X-Relay-Token".to_owned(),
                SecretString::from("header-secret-value"),
            )]),
        };
        let body = hook.body();
        assert_eq!(body["secret"], "x".repeat(40));
        assert_eq!(body["filter"], r#"data.status eq "error""#);
        assert_eq!(
            body["encryptedHeaders"]["X-Relay-Token"],
            "header-secret-value"
        );
        let debug = format!("{hook:?}");
        assert!(
            !debug.contains(&"x".repeat(40)) && !debug.contains("header-secret-value"),
            "{debug}"
        );
    }
}
