//! What a watchdog check found for one tenant: kept in the state store (so `consumer webhook
//! status` and the other consumers of a group read the same), counted and logged.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

/// The check's verdict, as the `outcome` label of `qscloud_consumer_watchdog_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    /// Every webhook to the relay was enabled.
    Ok,
    /// A webhook to the relay was disabled (and re-enabled, unless `reenable: false` or the
    /// tenant refused).
    Disabled,
    /// No webhook sends to the relay.
    Missing,
    /// The tenant API failed; nothing is known.
    Error,
}

impl CheckOutcome {
    pub fn label(self) -> &'static str {
        match self {
            CheckOutcome::Ok => "ok",
            CheckOutcome::Disabled => "disabled",
            CheckOutcome::Missing => "missing",
            CheckOutcome::Error => "error",
        }
    }
}

/// One webhook to the relay, after the check's actions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookState {
    pub id: String,
    pub name: String,
    /// Enabled after the check (re-enabled counts).
    pub enabled: bool,
    /// Qlik's reason, when the check found it disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason_code: Option<String>,
    /// What the check did about it, e.g. "re-enabled it".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The newest failed delivery seen: when, and what the relay answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    /// Failed deliveries resent by this check, and resends the tenant refused.
    pub resent: usize,
    pub resend_failed: usize,
    /// Resent by the watchdog in all, as far as the reports go back.
    #[serde(default)]
    pub resent_total: usize,
    /// The last time a check found it disabled: when, Qlik's reason and what was done (kept
    /// from report to report, so `status` still tells after it was re-enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_disabled: Option<String>,
    /// Why the deliveries could not be read, when they could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the last check of a tenant found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantReport {
    pub tenant_id: String,
    pub relay_url: String,
    /// RFC 3339.
    pub checked_at: String,
    /// The consumer instance that made the check.
    pub checked_by: String,
    pub outcome: CheckOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub webhooks: Vec<WebhookState>,
}

impl TenantReport {
    /// Whether events reach the relay as far as the check could tell: a webhook sends to it,
    /// and every one that does is enabled (after re-enabling).
    pub fn healthy(&self) -> bool {
        self.outcome != CheckOutcome::Missing
            && self.outcome != CheckOutcome::Error
            && self.webhooks.iter().all(|w| w.enabled)
    }

    /// The lines `consumer webhook status` prints for this tenant. Names and reasons come
    /// from the tenant, so they are quoted (`Debug`): a line break cannot forge a line.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "tenant {} → {}: {} (checked {} by {})",
            self.tenant_id,
            self.relay_url,
            match (self.outcome, self.healthy()) {
                (CheckOutcome::Missing, _) =>
                    "MISSING: no webhook sends reload events to the relay",
                (CheckOutcome::Error, _) => "UNKNOWN: the tenant API failed during the check",
                (_, true) => "ok",
                (_, false) => "DISABLED: a webhook to the relay is disabled",
            },
            self.checked_at,
            self.checked_by
        );
        if let Some(error) = &self.error {
            let _ = writeln!(s, "  error: {error}");
        }
        for w in &self.webhooks {
            let _ = writeln!(
                s,
                "  webhook {:?} ({}): {}",
                w.name,
                w.id,
                if w.enabled { "enabled" } else { "disabled" }
            );
            if w.disabled_reason.is_some() || w.disabled_reason_code.is_some() {
                let _ = writeln!(
                    s,
                    "    Qlik had disabled it: {:?} (code {:?})",
                    w.disabled_reason.as_deref().unwrap_or(""),
                    w.disabled_reason_code.as_deref().unwrap_or("")
                );
            }
            if let Some(action) = &w.action {
                let _ = writeln!(s, "    done: {action}");
            }
            if w.action.is_none()
                && let Some(last) = &w.last_disabled
            {
                let _ = writeln!(s, "    last found disabled: {last}");
            }
            let _ = writeln!(
                s,
                "    last failed delivery: {}",
                w.last_failure
                    .as_deref()
                    .unwrap_or("none in the period checked")
            );
            let _ = writeln!(
                s,
                "    resent by this check: {} (by the watchdog in all: {}){}",
                w.resent,
                w.resent_total,
                if w.resend_failed > 0 {
                    format!(
                        " ({} refused, tried again at the next check)",
                        w.resend_failed
                    )
                } else {
                    String::new()
                }
            );
            if let Some(error) = &w.error {
                let _ = writeln!(s, "    deliveries not read: {error}");
            }
        }
        s
    }
}

impl TenantReport {
    /// What a report carries over from the one before: per webhook, the last failed delivery
    /// (when this check saw none), the last disablement and the resends in all.
    pub fn carry_over(&mut self, previous: &TenantReport) {
        for w in &mut self.webhooks {
            let Some(before) = previous.webhooks.iter().find(|p| p.id == w.id) else {
                continue;
            };
            if w.last_failure.is_none() {
                w.last_failure.clone_from(&before.last_failure);
            }
            if w.last_disabled.is_none() {
                w.last_disabled.clone_from(&before.last_disabled);
            }
            w.resent_total = before.resent_total.saturating_add(w.resent);
        }
    }
}

/// The store key of a tenant's last report.
pub fn report_key(tenant_id: &str) -> String {
    format!("watchdog:report:{tenant_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(outcome: CheckOutcome, enabled: bool) -> TenantReport {
        TenantReport {
            tenant_id: "t".into(),
            relay_url: "https://relay.example/".into(),
            checked_at: "2026-12-06T00:00:00Z".into(),
            checked_by: "host-1".into(),
            outcome,
            error: None,
            webhooks: vec![WebhookState {
                id: "w1".into(),
                name: "relay\nforged line".into(),
                enabled,
                disabled_reason: Some("too many failures".into()),
                disabled_reason_code: Some("DELIVERY_FAILURES".into()),
                action: Some("re-enabled it".into()),
                last_failure: None,
                resent: 3,
                resend_failed: 0,
                resent_total: 3,
                last_disabled: None,
                error: None,
            }],
        }
    }

    #[test]
    fn healthy_means_a_webhook_to_the_relay_and_all_of_them_enabled() {
        assert!(report(CheckOutcome::Ok, true).healthy());
        // Found disabled, re-enabled: events flow again.
        assert!(report(CheckOutcome::Disabled, true).healthy());
        assert!(!report(CheckOutcome::Disabled, false).healthy());
        assert!(!report(CheckOutcome::Missing, true).healthy());
        assert!(!report(CheckOutcome::Error, true).healthy());
    }

    #[test]
    fn rendering_quotes_what_the_tenant_typed() {
        let text = report(CheckOutcome::Disabled, false).render();
        assert!(text.contains("DISABLED"), "{text}");
        assert!(text.contains(r#""relay\nforged line""#), "{text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("forged")).count(), 0);
        assert!(text.contains("resent by this check: 3"), "{text}");
        let mut next = report(CheckOutcome::Ok, true);
        next.webhooks[0].resent = 1;
        next.webhooks[0].last_failure = None;
        let mut before = report(CheckOutcome::Disabled, true);
        before.webhooks[0].last_failure = Some("yesterday, HTTP 503".into());
        before.webhooks[0].last_disabled = Some("at noon".into());
        next.carry_over(&before);
        assert_eq!(next.webhooks[0].resent_total, 4);
        assert_eq!(
            next.webhooks[0].last_failure.as_deref(),
            Some("yesterday, HTTP 503")
        );
        assert_eq!(next.webhooks[0].last_disabled.as_deref(), Some("at noon"));
        let round: TenantReport =
            serde_json::from_str(&serde_json::to_string(&report(CheckOutcome::Ok, true)).unwrap())
                .unwrap();
        assert_eq!(round, report(CheckOutcome::Ok, true));
    }
}
