//! One check of one tenant: the webhooks to the relay, a disabled one re-enabled and announced
//! once, a missing one announced when it goes missing, and failed deliveries resent once each.

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use super::report::{CheckOutcome, TenantReport, WebhookState, report_key};
use crate::alert::{Alert, Notice};
use crate::config::TenantConfig;
use crate::delivery::{Deliveries, Outcome};
use crate::state::{ClaimState, StateBackend, now_rfc3339};
use crate::webhooks::{ResendAction, resend_plan};
use crate::webhooks::{Webhook, WebhookDelivery, WebhooksApi};

/// Qlik keeps deliveries 7 days: the first check looks back that far.
const RETENTION: Duration = Duration::from_secs(7 * 86_400);
/// What is remembered (resends, announcements, where the last check ended) outlives Qlik's
/// record of the deliveries it is about.
const REMEMBER: Duration = Duration::from_secs(8 * 86_400);
/// Each check looks back this far before where the last one ended: a delivery Qlik records a
/// little late is still seen. Resends are remembered, so the overlap resends nothing twice.
const OVERLAP: time::Duration = time::Duration::hours(1);
/// How long a resend's claim lasts if its instance dies before it is done.
const RESEND_LEASE: Duration = Duration::from_secs(300);

/// What a check needs from the running consumer.
pub struct Checker {
    pub store: Arc<dyn StateBackend>,
    pub deliveries: Arc<Deliveries>,
    pub enrichment: crate::config::EnrichmentConfig,
    pub reenable: bool,
    /// Names this instance in claims and reports.
    pub instance: String,
}

impl Checker {
    pub async fn check(&self, tenant: &TenantConfig, relay: &Url) -> TenantReport {
        let started = OffsetDateTime::now_utc();
        let mut report = TenantReport {
            tenant_id: tenant.id.clone(),
            relay_url: relay.as_str().to_owned(),
            checked_at: now_rfc3339(),
            checked_by: self.instance.clone(),
            outcome: CheckOutcome::Ok,
            error: None,
            webhooks: Vec::new(),
        };
        let listed = match WebhooksApi::new(tenant, &self.enrichment) {
            Ok(api) => api.list().await.map(|hooks| (api, hooks)),
            Err(e) => Err(e),
        };
        let (api, hooks) = match listed {
            Ok(found) => found,
            Err(e) => {
                tracing::error!(
                    tenant = tenant.id.as_str(),
                    "webhook watchdog: cannot list the tenant's webhooks ({e}); alerting goes on, \
                     the next check tries again"
                );
                report.outcome = CheckOutcome::Error;
                report.error = Some(e.to_string());
                return self.finish(report).await;
            }
        };
        let to_relay: Vec<Webhook> = hooks
            .into_iter()
            .filter(|h| h.targets(relay.as_str()))
            .collect();
        self.missing(tenant, relay, to_relay.is_empty()).await;
        if to_relay.is_empty() {
            report.outcome = CheckOutcome::Missing;
            return self.finish(report).await;
        }
        for hook in &to_relay {
            let mut state = WebhookState {
                id: hook.id.clone(),
                name: hook.name.clone(),
                enabled: hook.enabled,
                disabled_reason: None,
                disabled_reason_code: None,
                action: None,
                last_failure: None,
                resent: 0,
                resend_failed: 0,
                resent_total: 0,
                last_disabled: None,
                error: None,
            };
            if !hook.enabled {
                report.outcome = CheckOutcome::Disabled;
                self.disabled(&api, tenant, relay, hook, &mut state).await;
            }
            crate::metrics::global().set_webhook_enabled(&tenant.id, &hook.name, state.enabled);
            if state.enabled {
                self.resend_failed(&api, tenant, hook, started, &mut state)
                    .await;
            }
            report.webhooks.push(state);
        }
        self.finish(report).await
    }

    /// Keeps the report (with what it carries over from the last one), counts and logs the
    /// check.
    async fn finish(&self, mut report: TenantReport) -> TenantReport {
        let key = report_key(&report.tenant_id);
        if let Some(previous) = self
            .store
            .note(&key)
            .await
            .and_then(|json| serde_json::from_str::<TenantReport>(&json).ok())
        {
            report.carry_over(&previous);
        } else {
            for w in &mut report.webhooks {
                w.resent_total = w.resent;
            }
        }
        crate::metrics::global().watchdog_check(&report.tenant_id, report.outcome.label());
        match serde_json::to_string(&report) {
            Ok(json) => {
                self.store.set_note(&key, &json, REMEMBER).await;
            }
            Err(e) => tracing::warn!("watchdog report does not serialize: {e}"),
        }
        let resent: usize = report.webhooks.iter().map(|w| w.resent).sum();
        tracing::info!(
            tenant = report.tenant_id.as_str(),
            outcome = report.outcome.label(),
            webhooks = report.webhooks.len(),
            resent,
            "webhook watchdog: checked the webhooks to the relay"
        );
        report
    }

    /// Announces that no webhook sends to the relay, when that is new.
    async fn missing(&self, tenant: &TenantConfig, relay: &Url, missing: bool) {
        let key = format!("watchdog:{}:missing", tenant.id);
        let was = self.store.note(&key).await.as_deref() == Some("1");
        if missing && !was {
            tracing::error!(
                tenant = tenant.id.as_str(),
                relay = relay.as_str(),
                "webhook watchdog: no webhook sends reload events to the relay; failed reloads \
                 of this tenant go unnoticed until one does (`consumer webhook create`)"
            );
            let notice = Notice {
                title: "No webhook sends reload events to the relay".to_owned(),
                text: format!(
                    "Tenant {} has no webhook that sends to the relay at {}, so its failed \
                     reloads are not alerted on. Create one with `consumer webhook create \
                     --url {}`, or check `watchdog.relayUrl` if the relay has moved.",
                    tenant.id,
                    relay.as_str(),
                    relay.as_str()
                ),
            };
            let key_id = format!("watchdog-missing-{}", crate::state::now_unix());
            self.announce(tenant, &key_id, notice).await;
        }
        if missing != was {
            self.store
                .set_note(&key, if missing { "1" } else { "0" }, REMEMBER)
                .await;
        }
    }

    /// Re-enables a webhook Qlik disabled (unless `reenable: false`) and announces it once per
    /// time Qlik disabled it.
    async fn disabled(
        &self,
        api: &WebhooksApi,
        tenant: &TenantConfig,
        relay: &Url,
        hook: &Webhook,
        state: &mut WebhookState,
    ) {
        state.disabled_reason = hook.disabled_reason.clone();
        state.disabled_reason_code = hook.disabled_reason_code.clone();
        let action = if self.reenable {
            match api.set_enabled(&hook.id, true).await {
                Ok(()) => {
                    state.enabled = true;
                    "re-enabled it".to_owned()
                }
                Err(e) => format!("could not re-enable it ({e}); the next check tries again"),
            }
        } else {
            "left it disabled (watchdog.reenable is false): re-enable it in Qlik Cloud, then \
             run `consumer webhook resend-failed`"
                .to_owned()
        };
        tracing::error!(
            tenant = tenant.id.as_str(),
            webhook = hook.id.as_str(),
            reason = ?hook.disabled_reason,
            code = ?hook.disabled_reason_code,
            "webhook watchdog: Qlik disabled webhook {:?} to the relay; {action}",
            hook.name
        );
        state.action = Some(action.clone());
        state.last_disabled = Some(format!(
            "{}: Qlik's reason {:?} (code {:?}); {action}",
            now_rfc3339(),
            hook.disabled_reason.as_deref().unwrap_or(""),
            hook.disabled_reason_code.as_deref().unwrap_or("")
        ));
        // Qlik stamps `updatedAt` when it disables a webhook: a later disablement is a new one.
        let when = hook
            .updated_at
            .clone()
            .or_else(|| hook.disabled_reason_code.clone())
            .unwrap_or_default();
        let key = format!("watchdog-disabled:{}/{}/{when}", tenant.id, hook.id);
        match self.store.claim(&key, &self.instance, RESEND_LEASE).await {
            ClaimState::Mine => {}
            ClaimState::Done | ClaimState::HeldElsewhere(_) => return,
        }
        let notice = Notice {
            title: format!("Qlik disabled the webhook \"{}\" to the relay", hook.name),
            text: format!(
                "Qlik Cloud disabled webhook \"{}\" ({}) of tenant {}, which sends reload events \
                 to the relay at {}. Qlik's reason: {} (code {}). The consumer {action}. Failed \
                 deliveries of the last 7 days are resent once the webhook is enabled.",
                hook.name,
                hook.id,
                tenant.id,
                relay.as_str(),
                hook.disabled_reason.as_deref().unwrap_or("none given"),
                hook.disabled_reason_code.as_deref().unwrap_or("none"),
            ),
        };
        let announced = self.announce(tenant, &key, notice).await;
        if announced {
            self.store.done(&key, &[], REMEMBER).await;
        } else {
            self.store.release(&key, &self.instance).await;
        }
    }

    /// Hands a notice to the tenant's chat and email destinations; whether each has it
    /// (delivered, or held or parked on disk for redelivery).
    async fn announce(&self, tenant: &TenantConfig, key: &str, notice: Notice) -> bool {
        let alert = Alert::for_notice(&tenant.id, key, notice);
        match self.deliveries.deliver(&alert, key).await {
            Ok(outcomes) => {
                for (sink, outcome) in &outcomes {
                    if let Outcome::Parked { error, .. } = outcome {
                        tracing::warn!(sink = sink.as_str(), "watchdog notice parked: {error}");
                    }
                }
                true
            }
            Err(e) => {
                tracing::error!(
                    tenant = tenant.id.as_str(),
                    "watchdog notice not delivered: {e}"
                );
                false
            }
        }
    }

    /// Resends the failed deliveries since the last check (the first looks back 7 days) that
    /// were not delivered later, each once across checks, restarts and consumers.
    async fn resend_failed(
        &self,
        api: &WebhooksApi,
        tenant: &TenantConfig,
        hook: &Webhook,
        started: OffsetDateTime,
        state: &mut WebhookState,
    ) {
        let since_key = format!("watchdog:{}:{}:since", tenant.id, hook.id);
        let oldest = started - RETENTION;
        let since = self
            .store
            .note(&since_key)
            .await
            .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
            .map_or(oldest, |last| (last - OVERLAP).max(oldest));
        let deliveries = match api.deliveries_since(&hook.id, since).await {
            Ok(deliveries) => deliveries,
            Err(e) => {
                tracing::error!(
                    tenant = tenant.id.as_str(),
                    webhook = hook.id.as_str(),
                    "webhook watchdog: cannot read the webhook's deliveries ({e}); the next check \
                     looks again"
                );
                state.error = Some(e.to_string());
                return;
            }
        };
        state.last_failure = deliveries
            .iter()
            .filter(|d| d.failed())
            .max_by_key(|d| d.triggered())
            .map(WebhookDelivery::summary);
        for action in resend_plan(&deliveries, since, false) {
            let ResendAction::Resend(delivery) = action else {
                continue;
            };
            // Keyed by the event where the record carries it: a resend that fails again makes
            // a new failed delivery of the same event, which is not resent in a loop.
            let what = delivery.event_id().unwrap_or_else(|| delivery.id.clone());
            let key = format!("watchdog-resend:{}/{}/{what}", tenant.id, hook.id);
            match self.store.claim(&key, &self.instance, RESEND_LEASE).await {
                ClaimState::Mine => {}
                ClaimState::Done | ClaimState::HeldElsewhere(_) => continue,
            }
            match api.resend(&hook.id, &delivery.id).await {
                Ok(()) => {
                    self.store.done(&key, &[], REMEMBER).await;
                    state.resent += 1;
                    crate::metrics::global().webhook_resend(&tenant.id, "resent");
                    tracing::info!(
                        tenant = tenant.id.as_str(),
                        webhook = hook.id.as_str(),
                        delivery = delivery.id.as_str(),
                        "webhook watchdog: resent failed delivery ({})",
                        delivery.summary()
                    );
                }
                Err(e) => {
                    self.store.release(&key, &self.instance).await;
                    state.resend_failed += 1;
                    crate::metrics::global().webhook_resend(&tenant.id, "failed");
                    tracing::warn!(
                        tenant = tenant.id.as_str(),
                        webhook = hook.id.as_str(),
                        delivery = delivery.id.as_str(),
                        "webhook watchdog: resend refused ({e}); the next check tries again"
                    );
                }
            }
        }
        // A refused resend is tried again next time: the next check must look back to it.
        if state.error.is_none() && state.resend_failed == 0 {
            let started = started.format(&Rfc3339).unwrap_or_default();
            self.store.set_note(&since_key, &started, REMEMBER).await;
        }
    }
}
