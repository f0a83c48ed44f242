//! The `/api/v1/webhooks` calls and pagination through `links.next.href`, through the tenant
//! API client ([`crate::tenant_api`]).

use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use url::Url;

use super::{NewWebhook, Webhook, WebhookDelivery, WebhookError};
use crate::config::{EnrichmentConfig, TenantConfig};
use crate::tenant_api::{Call, Overflow, TenantClient};

/// Answers are small lists; anything bigger is not what we asked for.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// Page size asked for (Qlik's maximum).
const PAGE_LIMIT: &str = "100";
/// A runaway `next` chain stops here.
const MAX_PAGES: usize = 10_000;

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
    ) -> Result<Vec<WebhookDelivery>, WebhookError> {
        let mut url = self.client.url(&["webhooks", id, "deliveries"]);
        url.query_pairs_mut()
            .append_pair("sort", "-triggeredAt")
            .append_pair("limit", PAGE_LIMIT);
        let what = format!("listing deliveries of webhook {id}");
        // Newest first: once a page reaches past the cutoff, later pages are older still.
        let all = self
            .pages(url, &what, |page: &[WebhookDelivery]| {
                !page
                    .iter()
                    .filter_map(WebhookDelivery::triggered)
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

    /// One call through the tenant API client (retries, limits and the JWT as
    /// [`crate::tenant_api`] describes), its failure told as a failure of `what`.
    async fn send(
        &self,
        method: Method,
        url: Url,
        body: Option<serde_json::Value>,
        what: &str,
    ) -> Result<Vec<u8>, WebhookError> {
        let mut call = Call::new(method, url).limit(MAX_BODY_BYTES, Overflow::Refuse);
        if let Some(value) = body {
            let bytes = serde_json::to_vec(&value).map_err(|e| WebhookError::Body {
                what: what.to_owned(),
                message: e.to_string(),
            })?;
            call = call.json(bytes);
        }
        self.client
            .send(call)
            .await
            .map(|body| body.bytes)
            .map_err(|e| WebhookError::from_api(what, e))
    }
}

fn parse<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::Body {
        what: what.to_owned(),
        message: format!("not the JSON Qlik documents: {e}"),
    })
}
