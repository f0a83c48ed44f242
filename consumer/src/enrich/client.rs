//! The tenant REST API client: Bearer JWT, timeouts, bounded retries on 429/5xx that honour
//! `Retry-After`, and graceful degradation (whatever fails is listed, the rest is returned).

use std::fmt;
use std::time::Duration;

use qlik_events::{Envelope, ReloadEvent};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, HeaderValue, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use url::Url;

use super::api::{AppInfo, AppItem, AppResponse, ReloadInfo, UserInfo};
use crate::config::{EnrichmentConfig, TenantConfig};

/// JSON answers are small; anything bigger is not what we asked for.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

/// Why one tenant API call gave nothing. Never contains the JWT (requests carry it only in a
/// header marked sensitive, and no message quotes headers).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    #[error("HTTP {status} after {attempts} attempt(s){hint}")]
    Status {
        status: u16,
        attempts: u32,
        hint: &'static str,
    },
    #[error("timed out after {attempts} attempt(s)")]
    Timeout { attempts: u32 },
    #[error("request failed after {attempts} attempt(s): {message}")]
    Transport { attempts: u32, message: String },
    #[error("unexpected response: {0}")]
    Body(String),
    #[error("the event carries no {0}")]
    NoId(&'static str),
    #[error("the app is not among the items the tenant returned")]
    NoItem,
    #[error("tenant API disabled in the configuration")]
    Disabled,
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Which tenant API resource an entry of [`Enrichment::missing`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Resource {
    Reload,
    ScriptLog,
    App,
    AppTags,
    Owner,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Reload => "reload details",
            Resource::ScriptLog => "script log",
            Resource::App => "app details",
            Resource::AppTags => "app tags",
            Resource::Owner => "app owner",
        })
    }
}

/// Something that could not be fetched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub what: Resource,
    pub reason: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

/// What the tenant API added to an event. Partial by design: an alert goes out with whatever
/// is here, and [`Self::missing`] says what is not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enrichment {
    pub reload: Option<ReloadInfo>,
    /// The full script log (`text/plain`). When it was longer than the configured limit, only
    /// its tail is kept and [`Self::missing`] says so.
    pub script_log: Option<String>,
    pub app: Option<AppInfo>,
    pub app_item: Option<AppItem>,
    pub owner: Option<UserInfo>,
    pub missing: Vec<Missing>,
}

impl Enrichment {
    /// No API calls made (Butler's `basicContentOnly`, or enrichment switched off): the alert
    /// carries what the event says and the `missing` list stays empty, since nothing failed.
    pub fn event_only() -> Self {
        Self::default()
    }

    /// The app's tags, empty when unknown.
    pub fn app_tags(&self) -> &[String] {
        self.app_item
            .as_ref()
            .map(|i| i.tags.as_slice())
            .unwrap_or_default()
    }

    fn note<T>(&mut self, what: Resource, result: Result<T, EnrichError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.missing.push(Missing {
                    what,
                    reason: e.to_string(),
                });
                None
            }
        }
    }
}

/// A client for one tenant's REST API.
#[derive(Clone)]
pub struct TenantClient {
    http: reqwest::Client,
    base: Url,
    tenant_id: String,
    auth: HeaderValue,
    settings: EnrichmentConfig,
}

impl fmt::Debug for TenantClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantClient")
            .field("base", &self.base.as_str())
            .field("tenant_id", &self.tenant_id)
            .field("auth", &"Bearer ***")
            .finish()
    }
}

impl TenantClient {
    pub fn new(tenant: &TenantConfig, settings: &EnrichmentConfig) -> Result<Self, EnrichError> {
        Self::with_jwt(
            &tenant.id,
            tenant.tenant_url.clone(),
            &tenant.jwt,
            settings.clone(),
        )
    }

    /// From parts, for callers without a [`TenantConfig`] (tests, tools).
    pub fn with_jwt(
        tenant_id: &str,
        base: Url,
        jwt: &SecretString,
        settings: EnrichmentConfig,
    ) -> Result<Self, EnrichError> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", jwt.expose_secret())).map_err(|_| {
                EnrichError::Client(
                    "the JWT contains characters not allowed in an HTTP header".to_owned(),
                )
            })?;
        // Sensitive headers are left out of hyper's and reqwest's debug output.
        auth.set_sensitive(true);
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("qscloud-consumer/", env!("CARGO_PKG_VERSION")))
            // The JWT must never follow a redirect to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| EnrichError::Client(e.without_url().to_string()))?;
        Ok(Self {
            http,
            base,
            tenant_id: tenant_id.to_owned(),
            auth,
            settings,
        })
    }

    /// `<tenantUrl>/api/v1/<segments…>`, each segment percent-encoded so an id from an event
    /// cannot change the path.
    pub(crate) fn url(&self, segments: &[&str]) -> Url {
        // `url` silently drops `.`/`..` segments; an id like that would address another
        // resource, so it is replaced by one that matches nothing.
        let segments: Vec<&str> = segments
            .iter()
            .map(|s| {
                if s.is_empty() || *s == "." || *s == ".." {
                    "%00"
                } else {
                    s
                }
            })
            .collect();
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        url.set_query(None);
        url
    }

    /// The tenant's base URL (`tenantUrl`).
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// The tenant id from the configuration.
    pub(crate) fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Timeouts and retry settings (`consumer.enrichment`).
    pub(crate) fn settings(&self) -> &EnrichmentConfig {
        &self.settings
    }

    /// A request through this client's HTTP client (timeouts, no redirects) carrying the
    /// tenant's Bearer JWT in a header marked sensitive. For other tenant API callers in this
    /// crate, such as the webhook administration in [`crate::webhooks`].
    pub(crate) fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// How long to wait before retry number `attempt` (1-based): the server's `Retry-After`
    /// (capped by `maxRetryAfterSeconds`) when it sent one, else exponential backoff.
    pub(crate) fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
        retry_after
            .map(|d| d.min(self.settings.max_retry_after))
            .unwrap_or_else(|| self.backoff(attempt))
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(10);
        (self.settings.initial_backoff * factor).min(
            self.settings
                .max_retry_after
                .max(self.settings.initial_backoff),
        )
    }

    /// GET with retries. Returns the body, cut to `limit` bytes; `keep_tail` keeps the end
    /// instead of failing when the body is longer (for script logs, whose end shows the error).
    async fn get(
        &self,
        url: Url,
        accept: &'static str,
        limit: usize,
        keep_tail: bool,
    ) -> Result<(Vec<u8>, bool), EnrichError> {
        let max_attempts = self.settings.max_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self
                .request(reqwest::Method::GET, url.clone())
                .header(ACCEPT, accept)
                .send()
                .await;
            let (error, retry_after) = match sent {
                Ok(response) if response.status().is_success() => {
                    match read_limited(response, limit, keep_tail).await {
                        Ok(body) => return Ok(body),
                        Err(ReadError::TooLarge) => {
                            return Err(EnrichError::Body(format!(
                                "response larger than {limit} bytes"
                            )));
                        }
                        Err(ReadError::Http(e)) if e.is_timeout() => {
                            (EnrichError::Timeout { attempts: attempt }, None)
                        }
                        Err(ReadError::Http(e)) => (
                            EnrichError::Transport {
                                attempts: attempt,
                                message: transport_reason(e),
                            },
                            None,
                        ),
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let error = EnrichError::Status {
                        status: status.as_u16(),
                        attempts: attempt,
                        hint: status_hint(status),
                    };
                    if !retryable(status) {
                        return Err(error);
                    }
                    (error, retry_after(response.headers()))
                }
                Err(e) if e.is_timeout() => (EnrichError::Timeout { attempts: attempt }, None),
                Err(e) => (
                    EnrichError::Transport {
                        attempts: attempt,
                        message: transport_reason(e),
                    },
                    None,
                ),
            };
            if attempt >= max_attempts {
                return Err(error);
            }
            let delay = self.retry_delay(attempt, retry_after);
            tracing::debug!(
                tenant = %self.tenant_id,
                path = url.path(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "tenant API call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn get_json<T: DeserializeOwned>(&self, segments: &[&str]) -> Result<T, EnrichError> {
        self.get_json_url(self.url(segments)).await
    }

    async fn get_json_url<T: DeserializeOwned>(&self, url: Url) -> Result<T, EnrichError> {
        let (body, _) = self
            .get(url, "application/json", MAX_JSON_BYTES, false)
            .await?;
        serde_json::from_slice(&body)
            .map_err(|e| EnrichError::Body(format!("not the expected JSON: {e}")))
    }

    /// `GET /api/v1/reloads/{reloadId}`.
    pub async fn reload(&self, reload_id: &str) -> Result<ReloadInfo, EnrichError> {
        self.get_json(&["reloads", reload_id]).await
    }

    /// `GET /api/v1/apps/{appId}/reloads/logs/{reloadId}` (`text/plain`). The second value is
    /// true when the log was longer than the limit and only its tail was kept.
    pub async fn script_log(
        &self,
        app_id: &str,
        reload_id: &str,
    ) -> Result<(String, bool), EnrichError> {
        let url = self.url(&["apps", app_id, "reloads", "logs", reload_id]);
        let (body, truncated) = self
            .get(url, "text/plain", self.settings.max_script_log_bytes, true)
            .await?;
        let mut text = String::from_utf8_lossy(&body).into_owned();
        if truncated {
            // Drop the partial first line left by the cut.
            if let Some(pos) = text.find('\n') {
                text.drain(..=pos);
            }
        }
        Ok((text, truncated))
    }

    /// `GET /api/v1/apps/{appId}`: its `attributes`.
    pub async fn app(&self, app_id: &str) -> Result<AppInfo, EnrichError> {
        let response: AppResponse = self.get_json(&["apps", app_id]).await?;
        response
            .attributes
            .ok_or_else(|| EnrichError::Body("no `attributes` in the app".to_owned()))
    }

    /// `GET /api/v1/items?resourceType=app&resourceId={appId}`: the app's tags and file size.
    pub async fn app_item(&self, app_id: &str) -> Result<AppItem, EnrichError> {
        let mut url = self.url(&["items"]);
        url.query_pairs_mut()
            .append_pair("resourceType", "app")
            .append_pair("resourceId", app_id)
            .append_pair("noActions", "true")
            .append_pair("limit", "100");
        let body: serde_json::Value = self.get_json_url(url).await?;
        AppItem::from_items(&body, app_id).ok_or(EnrichError::NoItem)
    }

    /// `GET /api/v1/users/{userId}`.
    pub async fn user(&self, user_id: &str) -> Result<UserInfo, EnrichError> {
        self.get_json(&["users", user_id]).await
    }

    /// Everything an alert can use, fetched concurrently. Never fails: what could not be
    /// fetched is listed in [`Enrichment::missing`] and logged (without the JWT).
    pub async fn enrich(&self, envelope: &Envelope, reload: &ReloadEvent) -> Enrichment {
        let app_id = reload.app_id.clone().or_else(|| envelope.app_id());
        let reload_id = reload.reload_id.clone();
        let event_owner = envelope.owner_id.clone();

        let need =
            |id: &Option<String>, what: &'static str| id.clone().ok_or(EnrichError::NoId(what));
        let reload_f = async {
            let id = need(&reload_id, "reload id")?;
            self.reload(&id).await
        };
        let log_f = async {
            let app = need(&app_id, "app id")?;
            let id = need(&reload_id, "reload id")?;
            self.script_log(&app, &id).await
        };
        let app_f = async {
            let app = need(&app_id, "app id")?;
            self.app(&app).await
        };
        let item_f = async {
            let app = need(&app_id, "app id")?;
            self.app_item(&app).await
        };
        let owner_f = async {
            match &event_owner {
                Some(owner) => Some(self.user(owner).await),
                None => None,
            }
        };
        let (reload_r, log_r, app_r, item_r, owner_r) =
            tokio::join!(reload_f, log_f, app_f, item_f, owner_f);

        let mut out = Enrichment::default();
        out.reload = out.note(Resource::Reload, reload_r);
        if let Some((log, truncated)) = out.note(Resource::ScriptLog, log_r) {
            if truncated {
                out.missing.push(Missing {
                    what: Resource::ScriptLog,
                    reason: format!(
                        "longer than {} bytes: only its end was kept, so the head is not the start of the log",
                        self.settings.max_script_log_bytes
                    ),
                });
            }
            out.script_log = Some(log);
        }
        out.app = out.note(Resource::App, app_r);
        out.app_item = out.note(Resource::AppTags, item_r);
        // The event names the owner; older events may not, then the app's owner is used.
        let owner_r = match owner_r {
            Some(result) => result,
            None => match out.app.as_ref().and_then(|a| a.owner_id.clone()) {
                Some(owner) => self.user(&owner).await,
                None => Err(EnrichError::NoId("owner id")),
            },
        };
        out.owner = out.note(Resource::Owner, owner_r);

        for missing in &out.missing {
            tracing::warn!(
                tenant = %self.tenant_id,
                event_id = %envelope.id,
                what = %missing.what,
                reason = %missing.reason,
                "tenant API: could not fetch; the alert goes out without it"
            );
        }
        out
    }
}

pub(crate) fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

fn status_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => " (the tenant rejected the JWT: check auth.jwt.token / QLIK_TENANT_JWT)",
        403 => " (the JWT's user lacks permission for this resource)",
        404 => " (not found)",
        _ => "",
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    keep_tail: bool,
) -> Result<(Vec<u8>, bool), ReadError> {
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            if !keep_tail {
                return Err(ReadError::TooLarge);
            }
            truncated = true;
            // Trim in batches rather than per chunk, to keep this linear.
            if body.len() > limit * 2 {
                body.drain(..body.len() - limit);
            }
        }
    }
    if body.len() > limit {
        body.drain(..body.len() - limit);
    }
    Ok((body, truncated))
}

/// reqwest's own message ("error sending request") hides the cause; an operator needs the
/// innermost one (connection refused, DNS, TLS). The URL is dropped: ids in paths are noise and
/// the tenant is logged beside it anyway. Neither the error nor its sources carry headers, so
/// the JWT cannot leak through here.
fn transport_reason(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        let text = inner.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = inner.source();
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        let client = TenantClient::with_jwt(
            "t",
            Url::parse("https://acme.eu.qlikcloud.com/").expect("url"),
            &SecretString::from("a.b.c"),
            EnrichmentConfig::default(),
        )
        .expect("client");
        assert_eq!(
            client.url(&["reloads", "../users/me?x=1"]).as_str(),
            "https://acme.eu.qlikcloud.com/api/v1/reloads/..%2Fusers%2Fme%3Fx=1"
        );
        assert!(
            client
                .url(&["reloads", ".."])
                .as_str()
                .ends_with("/api/v1/reloads/%2500")
        );
        assert!(!format!("{client:?}").contains("a.b.c"));
    }
}
