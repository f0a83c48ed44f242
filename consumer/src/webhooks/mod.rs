//! Qlik Cloud webhook administration through the tenant's `/api/v1/webhooks` API, for the
//! `consumer webhook …` commands: create the webhooks that send reload events to the relay
//! ([`plan`]), list them (enabled state, why Qlik disabled one), delete them, and resend the
//! deliveries that failed during a broker or relay outage ([`resend_plan`]; Qlik keeps
//! deliveries for 7 days).
//!
//! Requests go through the tenant API client ([`crate::tenant_api`]): the tenant JWT as a
//! Bearer header marked sensitive, timeouts and retries from `consumer.enrichment`, no
//! redirects. Errors carry Qlik's own error details (`errors[].title/detail/code`) and never the
//! JWT or the webhook secret.

mod api;
mod error;
mod existing;
mod plan;
mod records;
mod resend;
mod secret;
mod since;

pub use api::WebhooksApi;
pub use error::{QlikError, WebhookError, WebhookErrorKind};
pub use existing::{Existing, existing};
pub use plan::{FilterChoice, Plan, PlanError, plan};
pub use records::{DeliveryRequest, DeliveryResponse, NewWebhook, Webhook, WebhookDelivery};
pub use resend::{ResendAction, ResendCounts, resend_plan};
pub use secret::{SecretProblem, validate_secret};
pub use since::{MAX_DELIVERY_AGE, SinceError, parse_since};

/// Only failed app reloads. Qlik accepts a `data.status` filter only on a webhook whose one
/// event type is [`qlik_events::APP_RELOAD_FINISHED`].
pub const FAILED_APP_RELOADS_FILTER: &str = r#"data.status eq "error""#;
