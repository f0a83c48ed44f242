//! What a tenant already has for a `consumer webhook create` request, so that running it again
//! creates nothing: each planned webhook is matched against the webhooks that send to the same
//! URL. Pure: the command lists the webhooks and acts on the answer.

use super::plan::Plan;
use super::records::Webhook;

/// The tenant's webhooks to the request's URL, sorted by what they mean for the request.
#[derive(Debug)]
pub struct Existing<'a> {
    /// Per plan, in plan order: the webhooks that already send exactly its event types to the
    /// URL (usually none or one). A plan with any is not created again.
    pub matched: Vec<Vec<&'a Webhook>>,
    /// Webhooks to the URL that share some event types with the request but not as one plan
    /// has them: creating beside them would send those events twice, or leave an old set-up
    /// half replaced.
    pub conflicting: Vec<&'a Webhook>,
    /// Webhooks to the URL for other event types only (the relay forwards any event): they
    /// neither satisfy nor hinder the request.
    pub unrelated: Vec<&'a Webhook>,
}

impl Existing<'_> {
    /// Whether every planned webhook exists already.
    pub fn complete(&self) -> bool {
        self.matched.iter().all(|m| !m.is_empty())
    }
}

/// Sorts `hooks` against `plans` for `url` (compared as [`Webhook::targets`] does). Event types
/// are compared as sets; the filter is not compared (the command points out a difference).
pub fn existing<'a>(plans: &[Plan], url: &str, hooks: &'a [Webhook]) -> Existing<'a> {
    let mut matched = vec![Vec::new(); plans.len()];
    let mut conflicting = Vec::new();
    let mut unrelated = Vec::new();
    for hook in hooks.iter().filter(|h| h.targets(url)) {
        match plans
            .iter()
            .position(|p| same_types(&p.event_types, &hook.event_types))
        {
            Some(i) => matched[i].push(hook),
            None if plans
                .iter()
                .any(|p| overlap(&p.event_types, &hook.event_types)) =>
            {
                conflicting.push(hook)
            }
            None => unrelated.push(hook),
        }
    }
    Existing {
        matched,
        conflicting,
        unrelated,
    }
}

fn set(v: &[String]) -> std::collections::BTreeSet<&str> {
    v.iter().map(|t| t.trim()).collect()
}

fn same_types(a: &[String], b: &[String]) -> bool {
    set(a) == set(b)
}

fn overlap(a: &[String], b: &[String]) -> bool {
    !set(a).is_disjoint(&set(b))
}

#[cfg(test)]
mod tests {
    use qlik_events::{APP_RELOAD_FINISHED, RELOAD_FINISHED};

    use super::*;
    use crate::webhooks::{FilterChoice, plan};

    const URL: &str = "https://relay.example.com/";

    fn hook(id: &str, url: &str, types: &[&str]) -> Webhook {
        serde_json::from_value(serde_json::json!({
            "id": id, "name": id, "url": url, "eventTypes": types, "enabled": true,
        }))
        .expect("webhook")
    }

    fn default_plans() -> Vec<Plan> {
        plan(
            &[APP_RELOAD_FINISHED.to_owned(), RELOAD_FINISHED.to_owned()],
            &FilterChoice::Default,
        )
        .expect("plan")
    }

    #[test]
    fn webhooks_to_the_same_url_with_the_same_types_satisfy_their_plan() {
        let hooks = [
            hook("a", "https://RELAY.example.com", &[APP_RELOAD_FINISHED]),
            hook("b", URL, &[RELOAD_FINISHED]),
            hook(
                "elsewhere",
                "https://other.example.com/",
                &[RELOAD_FINISHED],
            ),
        ];
        let plans = default_plans();
        let found = existing(&plans, URL, &hooks);
        assert!(found.complete());
        assert_eq!(found.matched[0][0].id, "a");
        assert_eq!(found.matched[1][0].id, "b");
        assert!(found.conflicting.is_empty());

        let found = existing(&plans, URL, &hooks[1..]);
        assert!(!found.complete(), "the app reload webhook is missing");
        assert!(found.matched[0].is_empty());
    }

    #[test]
    fn other_event_types_to_the_same_url_conflict() {
        let hooks = [hook("both", URL, &[RELOAD_FINISHED, APP_RELOAD_FINISHED])];
        let found = existing(&default_plans(), URL, &hooks);
        assert_eq!(found.conflicting.len(), 1);
        assert!(found.matched.iter().all(Vec::is_empty));
        // The same set in another order is the same request.
        let one = plan(
            &[APP_RELOAD_FINISHED.to_owned(), RELOAD_FINISHED.to_owned()],
            &FilterChoice::None,
        )
        .expect("plan");
        let found = existing(&one, URL, &hooks);
        assert!(found.complete() && found.conflicting.is_empty());
    }

    #[test]
    fn webhooks_for_other_event_types_only_are_unrelated() {
        let hooks = [hook("apps", URL, &["com.qlik.v1.app.created"])];
        let found = existing(&default_plans(), URL, &hooks);
        assert!(found.conflicting.is_empty());
        assert_eq!(found.unrelated.len(), 1);
        assert!(
            !found.complete(),
            "the requested webhooks are still to be created"
        );
    }
}
