//! Qlik Cloud webhook administration through the tenant's `/api/v1/webhooks` API, for the
//! `consumer webhook …` commands: create the webhooks that send reload events to the relay,
//! list them (enabled state, why Qlik disabled one), delete them, and resend the deliveries that
//! failed during a broker or relay outage (Qlik keeps deliveries for 7 days).
//!
//! Requests go through [`crate::enrich::TenantClient`]'s HTTP client: the tenant JWT as a
//! Bearer header marked sensitive, timeouts and retries from `consumer.enrichment`, no
//! redirects. Errors carry Qlik's own error details (`errors[].title/detail/code`) and never the
//! JWT or the webhook secret.

mod api;
mod secret;
mod since;

pub use api::{
    Delivery, NewWebhook, QlikError, WebhookError, WebhookErrorKind, WebhooksApi, event_id_of,
};
pub use secret::{SecretProblem, validate_secret};
pub use since::{MAX_DELIVERY_AGE, SinceError, parse_since};

use serde::{Deserialize, Deserializer, Serialize};

/// The app reload event (`data.status` `ok`/`error`): what Butler alerts on.
pub const APP_RELOAD_FINISHED: &str = "com.qlik.v1.app.reload.finished";
/// The reload event of the newer reloads API (`data.status` `SUCCEEDED`/`FAILED`/…).
pub const RELOAD_FINISHED: &str = "com.qlik.v1.reload.finished";
/// Only failed app reloads. Qlik accepts a `data.status` filter only on a webhook whose one
/// event type is [`APP_RELOAD_FINISHED`].
pub const FAILED_APP_RELOADS_FILTER: &str = r#"data.status eq "error""#;

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

/// How `create` splits the requested event types into webhooks. Qlik accepts the
/// `data.status` filter only when [`APP_RELOAD_FINISHED`] is the webhook's only event type, so by
/// default the app reload event gets a webhook of its own with [`FAILED_APP_RELOADS_FILTER`],
/// and the other event types share a second one without a filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub event_types: Vec<String>,
    pub filter: Option<String>,
    /// Appended to the webhook name when the request is split, e.g. ` (app reload failed)`.
    pub name_suffix: &'static str,
}

/// What the user asked for about the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterChoice {
    /// `data.status eq "error"` for app reload events (splitting as described on [`Plan`]).
    Default,
    /// No filter: one webhook with every event type.
    None,
    /// This filter on one webhook with every event type.
    Custom(String),
}

/// Why a create request cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("at least one --event-type is needed")]
    NoEventTypes,
    #[error(
        "Qlik accepts a filter on data.status only when {APP_RELOAD_FINISHED} is the webhook's only event type; \
         drop the other --event-type values or leave out --filter (the default creates one filtered webhook for app reloads and one for the other types)"
    )]
    StatusFilterWithOtherTypes,
}

/// Splits the requested event types into the webhooks to create.
pub fn plan(event_types: &[String], filter: &FilterChoice) -> Result<Vec<Plan>, PlanError> {
    let mut types: Vec<String> = Vec::new();
    for t in event_types {
        let t = t.trim();
        if !t.is_empty() && !types.iter().any(|x| x == t) {
            types.push(t.to_owned());
        }
    }
    if types.is_empty() {
        return Err(PlanError::NoEventTypes);
    }
    let only_app_reload = types.len() == 1 && types[0] == APP_RELOAD_FINISHED;
    match filter {
        FilterChoice::None => Ok(vec![Plan {
            event_types: types,
            filter: None,
            name_suffix: "",
        }]),
        FilterChoice::Custom(expr) => {
            if expr.contains("data.status") && !only_app_reload {
                return Err(PlanError::StatusFilterWithOtherTypes);
            }
            Ok(vec![Plan {
                event_types: types,
                filter: Some(expr.clone()),
                name_suffix: "",
            }])
        }
        FilterChoice::Default => {
            let others: Vec<String> = types
                .iter()
                .filter(|t| *t != APP_RELOAD_FINISHED)
                .cloned()
                .collect();
            let has_app_reload = others.len() < types.len();
            let mut plans = Vec::new();
            let split = has_app_reload && !others.is_empty();
            if has_app_reload {
                plans.push(Plan {
                    event_types: vec![APP_RELOAD_FINISHED.to_owned()],
                    filter: Some(FAILED_APP_RELOADS_FILTER.to_owned()),
                    name_suffix: if split { " (app reload failed)" } else { "" },
                });
            }
            if !others.is_empty() {
                let suffix = if !split {
                    ""
                } else if others.len() == 1 && others[0] == RELOAD_FINISHED {
                    " (reload finished)"
                } else {
                    " (other events)"
                };
                plans.push(Plan {
                    event_types: others,
                    filter: None,
                    name_suffix: suffix,
                });
            }
            Ok(plans)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn default_splits_app_reload_from_the_other_types() {
        let plans = plan(
            &s(&[APP_RELOAD_FINISHED, RELOAD_FINISHED]),
            &FilterChoice::Default,
        )
        .expect("plan");
        assert_eq!(plans.len(), 2);
        assert_eq!(plans[0].event_types, s(&[APP_RELOAD_FINISHED]));
        assert_eq!(plans[0].filter.as_deref(), Some(FAILED_APP_RELOADS_FILTER));
        assert_eq!(plans[1].event_types, s(&[RELOAD_FINISHED]));
        assert_eq!(plans[1].filter, None);
        assert_eq!(plans[1].name_suffix, " (reload finished)");
    }

    #[test]
    fn one_type_gives_one_webhook_named_as_asked() {
        let plans = plan(&s(&[APP_RELOAD_FINISHED]), &FilterChoice::Default).expect("plan");
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].name_suffix, "");
        assert_eq!(plans[0].filter.as_deref(), Some(FAILED_APP_RELOADS_FILTER));
        let plans = plan(&s(&[RELOAD_FINISHED]), &FilterChoice::Default).expect("plan");
        assert_eq!(plans[0].filter, None);
    }

    #[test]
    fn no_filter_and_custom_filters_keep_one_webhook() {
        let both = s(&[APP_RELOAD_FINISHED, RELOAD_FINISHED]);
        assert_eq!(plan(&both, &FilterChoice::None).expect("plan").len(), 1);
        let custom = FilterChoice::Custom(r#"spaceId eq "abc""#.to_owned());
        assert_eq!(plan(&both, &custom).expect("plan")[0].event_types, both);
        let status = FilterChoice::Custom(FAILED_APP_RELOADS_FILTER.to_owned());
        assert_eq!(
            plan(&both, &status),
            Err(PlanError::StatusFilterWithOtherTypes)
        );
        assert_eq!(
            plan(&[], &FilterChoice::Default),
            Err(PlanError::NoEventTypes)
        );
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
}
