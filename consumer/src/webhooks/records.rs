//! What the webhooks API takes and returns: webhooks, a webhook to create, and the delivery
//! records Qlik keeps for 7 days.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A webhook as the tenant describes it. Deliberately without `secret` (older tenants still
/// return it) and without header values (they may be secrets): neither can be printed by
/// accident.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
    #[serde(default)]
    pub enabled: bool,
    /// Why the webhook is disabled (set by Qlik when it disabled a failing webhook).
    #[serde(default)]
    pub disabled_reason: Option<String>,
    #[serde(default)]
    pub disabled_reason_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default)]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Whether a secret is set (newer tenants; older ones return the secret itself, which is
    /// not kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_added: Option<bool>,
    /// Names of the plain and encrypted custom headers; their values are not kept.
    #[serde(
        default,
        rename(deserialize = "headers"),
        deserialize_with = "header_names"
    )]
    pub header_names: Vec<String>,
    #[serde(default, deserialize_with = "header_names")]
    pub encrypted_headers: Vec<String>,
}

impl Webhook {
    /// Same target as `url`, ignoring a trailing slash and the case of scheme and host.
    pub fn targets(&self, url: &str) -> bool {
        normalize_url(&self.url) == normalize_url(url)
    }
}

fn normalize_url(url: &str) -> String {
    match url::Url::parse(url.trim()) {
        Ok(parsed) => parsed.as_str().trim_end_matches('/').to_owned(),
        Err(_) => url.trim().trim_end_matches('/').to_owned(),
    }
}

/// Header names from `{"name": "value", …}` (plain headers) or `["name", …]` (encrypted headers
/// in responses). Values are dropped here.
fn header_names<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(deserializer)?;
    Ok(match value {
        Some(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    })
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
    pub(super) fn body(&self) -> serde_json::Value {
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

/// Qlik's record of one delivery of a webhook (`GET /api/v1/webhooks/{id}/deliveries`); not
/// to be confused with [`crate::delivery`], which delivers alerts to sinks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDelivery {
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

impl WebhookDelivery {
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

    /// One line for a person: id, time, event type, the receiver's answer and the event id
    /// where known.
    pub fn summary(&self) -> String {
        format!(
            "{} {} {}{}{}",
            self.id,
            self.triggered_at,
            self.event_type,
            self.response_status()
                .map(|s| format!(" (answered HTTP {s})"))
                .unwrap_or_default(),
            self.event_id()
                .map(|e| format!(" event {e}"))
                .unwrap_or_default()
        )
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
fn event_id_of(body: &serde_json::Value) -> Option<String> {
    ["id", "eventId"]
        .iter()
        .find_map(|k| body.get(*k).and_then(|v| v.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn webhook_json_keeps_no_secret_and_no_header_values() {
        let hook: Webhook = serde_json::from_value(serde_json::json!({
            "id": "w1", "name": "n", "url": "https://x.example/", "eventTypes": [],
            "secret": "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t", "headers": {"X-Relay-Token": "tok-value"},
            "encryptedHeaders": ["X-Other"], "enabled": false, "disabledReason": "too many failures"
        }))
        .expect("webhook");
        let out = serde_json::to_string(&hook).expect("json");
        assert!(
            !out.contains("s3cr3t") && !out.contains("tok-value"),
            "{out}"
        );
        assert_eq!(hook.header_names, s(&["X-Relay-Token"]));
        assert_eq!(hook.encrypted_headers, s(&["X-Other"]));
        assert!(hook.targets("https://X.example"));
    }

    #[test]
    fn new_webhook_body_and_debug() {
        let hook = NewWebhook {
            name: "n".into(),
            description: None,
            url: "https://relay.example/".into(),
            event_types: vec![qlik_events::APP_RELOAD_FINISHED.into()],
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
