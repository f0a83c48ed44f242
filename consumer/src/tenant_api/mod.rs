//! The one client for a tenant's REST API (`<tenantUrl>/api/v1/…`), shared by enrichment
//! ([`crate::enrich`]) and webhook administration ([`crate::webhooks`]).
//!
//! Every call carries the tenant JWT as a Bearer header marked sensitive, has the timeouts of
//! `consumer.enrichment`, never follows a redirect (the JWT must not go to another host), is
//! retried on 408/429/5xx and connection failures honouring `Retry-After`
//! ([`TenantClient::send`]), and reads at most a set number of bytes, saying so when an answer
//! was longer ([`Overflow`], [`Body::truncated`]). Errors name the innermost cause
//! (connection refused, DNS, TLS) and never contain the JWT.

mod body;
mod error;
mod reads;
mod responses;
mod send;

use std::fmt;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

pub use body::{Body, Overflow};
pub use error::ApiError;
pub use responses::{AppInfo, AppItem, Me, ReloadInfo, UserInfo};
pub use send::Call;

use crate::config::{EnrichmentConfig, TenantConfig};

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
    /// The tenant's URL and JWT, with the timeouts and retry settings of `consumer.enrichment`
    /// (whether enrichment is enabled does not matter here).
    pub fn new(tenant: &TenantConfig, settings: &EnrichmentConfig) -> Result<Self, ApiError> {
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
    ) -> Result<Self, ApiError> {
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", jwt.expose_secret())).map_err(|_| {
                ApiError::Client(
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
            .map_err(|e| ApiError::Client(e.without_url().to_string()))?;
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
    pub fn url(&self, segments: &[&str]) -> Url {
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
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The tenant id from the configuration.
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// Timeouts and retry settings (`consumer.enrichment`).
    pub fn settings(&self) -> &EnrichmentConfig {
        &self.settings
    }

    /// A request through this client's HTTP client (timeouts, no redirects) carrying the
    /// tenant's Bearer JWT in a header marked sensitive.
    fn request(&self, method: reqwest::Method, url: Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone())
    }

    /// How long to wait before retry number `attempt` (1-based): the server's `Retry-After`
    /// (capped by `maxRetryAfterSeconds`) when it sent one, else exponential backoff.
    fn retry_delay(&self, attempt: u32, retry_after: Option<Duration>) -> Duration {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn backoff_doubles_up_to_the_cap_and_retry_after_is_capped() {
        let settings = EnrichmentConfig {
            initial_backoff: Duration::from_millis(100),
            max_retry_after: Duration::from_millis(350),
            ..EnrichmentConfig::default()
        };
        let client = TenantClient::with_jwt(
            "t",
            Url::parse("https://acme.eu.qlikcloud.com/").expect("url"),
            &SecretString::from("a.b.c"),
            settings,
        )
        .expect("client");
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(client.retry_delay(1, None)), 100);
        assert_eq!(ms(client.retry_delay(2, None)), 200);
        assert_eq!(ms(client.retry_delay(3, None)), 350);
        assert_eq!(
            ms(client.retry_delay(1, Some(Duration::from_secs(60)))),
            350
        );
        assert_eq!(ms(client.retry_delay(1, Some(Duration::ZERO))), 0);
    }
}
