//! Which failed deliveries `consumer webhook resend-failed` resends: the planning, apart from
//! the API calls so it can be tested on its own.

use std::collections::HashMap;

use time::OffsetDateTime;

use super::WebhookDelivery;

/// What to do about one failed delivery.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ResendAction<'a> {
    /// The same event was delivered successfully at or after this failure (Qlik's own retry,
    /// or an earlier run of this command): nothing to do.
    DeliveredLater(&'a WebhookDelivery),
    /// Dry run: this one would be resent.
    WouldResend(&'a WebhookDelivery),
    /// Resend this one, unless a resend of the same event went through earlier in this run
    /// (which only the run knows).
    Resend(&'a WebhookDelivery),
}

impl<'a> ResendAction<'a> {
    pub fn delivery(&self) -> &'a WebhookDelivery {
        match *self {
            ResendAction::DeliveredLater(d)
            | ResendAction::WouldResend(d)
            | ResendAction::Resend(d) => d,
        }
    }
}

/// The actions for one webhook's failed deliveries triggered at or after `cutoff`, oldest
/// first so events are resent in the order they happened.
///
/// `deliveries` may come from any number of pages, in any order, and may reach past the
/// cutoff or repeat a delivery (pages shift while new deliveries arrive): the plan is the same.
/// A failure counts as delivered later only when both it and a successful delivery carry the
/// event id (Qlik includes the request body in delivery records).
pub fn resend_plan(
    deliveries: &[WebhookDelivery],
    cutoff: OffsetDateTime,
    dry_run: bool,
) -> Vec<ResendAction<'_>> {
    let in_window = |d: &&WebhookDelivery| d.triggered().is_some_and(|at| at >= cutoff);
    let mut delivered_at: HashMap<String, OffsetDateTime> = HashMap::new();
    for d in deliveries
        .iter()
        .filter(in_window)
        .filter(|d| d.succeeded())
    {
        if let (Some(event), Some(at)) = (d.event_id(), d.triggered()) {
            let latest = delivered_at.entry(event).or_insert(at);
            *latest = (*latest).max(at);
        }
    }
    let mut failed: Vec<&WebhookDelivery> = deliveries
        .iter()
        .filter(in_window)
        .filter(|d| d.failed())
        .collect();
    failed.sort_by(|a, b| (a.triggered(), &a.id).cmp(&(b.triggered(), &b.id)));
    failed.dedup_by(|a, b| a.id == b.id);
    failed
        .into_iter()
        .map(|d| {
            let later_success = match (d.event_id(), d.triggered()) {
                (Some(event), Some(at)) => delivered_at.get(&event).is_some_and(|ok| *ok >= at),
                _ => false,
            };
            if later_success {
                ResendAction::DeliveredLater(d)
            } else if dry_run {
                ResendAction::WouldResend(d)
            } else {
                ResendAction::Resend(d)
            }
        })
        .collect()
}

/// What a run of `resend-failed` did, for one webhook or all of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResendCounts {
    /// Failed deliveries in the window.
    pub found: usize,
    /// Skipped: delivered successfully later, or the same event resent earlier in the run.
    pub already_delivered: usize,
    pub resent: usize,
    /// Resends the tenant refused or did not answer.
    pub failed: usize,
}

impl ResendCounts {
    pub fn add(&mut self, other: &ResendCounts) {
        self.found += other.found;
        self.already_delivered += other.already_delivered;
        self.resent += other.resent;
        self.failed += other.failed;
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    /// A delivery record as Qlik returns it; `minute` past 09:00 on 2026-11-30.
    fn delivery(id: &str, status: &str, minute: u8, event: Option<&str>) -> WebhookDelivery {
        let mut record = serde_json::json!({
            "id": id,
            "status": status,
            "triggeredAt": format!("2026-11-30T09:{minute:02}:00.000Z"),
            "eventType": qlik_events::APP_RELOAD_FINISHED,
        });
        if let Some(event) = event {
            record["request"] = serde_json::json!({"body": {"id": event}});
        }
        serde_json::from_value(record).expect("delivery record")
    }

    const CUTOFF: OffsetDateTime = datetime!(2026-11-30 09:10 UTC);

    fn ids<'a>(plan: &[ResendAction<'a>]) -> Vec<(&'static str, &'a str)> {
        plan.iter()
            .map(|a| {
                let kind = match a {
                    ResendAction::DeliveredLater(_) => "later",
                    ResendAction::WouldResend(_) => "would",
                    ResendAction::Resend(_) => "resend",
                };
                (kind, a.delivery().id.as_str())
            })
            .collect()
    }

    fn sample() -> Vec<WebhookDelivery> {
        // Newest first, as the API sorts them.
        vec![
            delivery("d6", "success", 40, Some("e2")),
            delivery("d5", "fail", 35, Some("e3")),
            delivery("d4", "fail", 30, Some("e2")),
            delivery("d3", "success", 25, Some("e4")),
            delivery("d2", "fail", 20, None),
            delivery("d1", "fail", 15, Some("e1")),
            delivery("d0", "fail", 5, Some("e0")),
        ]
    }

    #[test]
    fn failed_deliveries_in_the_window_are_resent_oldest_first() {
        let deliveries = sample();
        let plan = resend_plan(&deliveries, CUTOFF, false);
        assert_eq!(
            ids(&plan),
            [
                ("resend", "d1"),
                ("resend", "d2"),
                ("later", "d4"),
                ("resend", "d5")
            ]
        );
    }

    #[test]
    fn a_failure_counts_as_delivered_only_by_a_success_at_or_after_it() {
        let deliveries = vec![
            delivery("ok-before", "success", 12, Some("e1")),
            delivery("fail", "fail", 15, Some("e1")),
            delivery("fail-2", "fail", 20, Some("e2")),
            delivery("ok-same-time", "success", 20, Some("e2")),
            delivery("fail-other", "fail", 21, Some("e3")),
            delivery("ok-no-event", "success", 30, None),
        ];
        let plan = resend_plan(&deliveries, CUTOFF, false);
        assert_eq!(
            ids(&plan),
            [
                ("resend", "fail"),
                ("later", "fail-2"),
                ("resend", "fail-other")
            ]
        );
    }

    #[test]
    fn since_moves_the_window() {
        let deliveries = sample();
        let plan = resend_plan(&deliveries, datetime!(2026-11-30 09:00 UTC), false);
        assert_eq!(plan.first().map(|a| a.delivery().id.as_str()), Some("d0"));
        assert_eq!(plan.len(), 5);
        let plan = resend_plan(&deliveries, datetime!(2026-11-30 09:30 UTC), false);
        assert_eq!(ids(&plan), [("later", "d4"), ("resend", "d5")]);
        let plan = resend_plan(&deliveries, datetime!(2026-11-30 09:31 UTC), false);
        assert_eq!(ids(&plan), [("resend", "d5")]);
        assert!(resend_plan(&deliveries, datetime!(2026-11-30 10:00 UTC), false).is_empty());
    }

    #[test]
    fn a_dry_run_plans_the_same_without_resending() {
        let deliveries = sample();
        let real: Vec<_> = ids(&resend_plan(&deliveries, CUTOFF, false))
            .into_iter()
            .map(|(kind, id)| (if kind == "resend" { "would" } else { kind }, id))
            .collect();
        let dry = ids(&resend_plan(&deliveries, CUTOFF, true));
        assert_eq!(dry, real);
        assert!(dry.iter().any(|(kind, _)| *kind == "later"));
    }

    #[test]
    fn the_plan_does_not_depend_on_pages() {
        let deliveries = sample();
        let expected = ids(&resend_plan(&deliveries, CUTOFF, false));
        let mut reversed = deliveries.clone();
        reversed.reverse();
        assert_eq!(ids(&resend_plan(&reversed, CUTOFF, false)), expected);
        // Pages that overlap because new deliveries arrived between two page requests.
        let mut overlapping = deliveries[..4].to_vec();
        overlapping.extend_from_slice(&deliveries[2..]);
        assert_eq!(ids(&resend_plan(&overlapping, CUTOFF, false)), expected);
    }
}
