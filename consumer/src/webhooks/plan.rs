//! How `consumer webhook create` splits the requested event types into webhooks.

use qlik_events::{APP_RELOAD_FINISHED, RELOAD_FINISHED};

use super::FAILED_APP_RELOADS_FILTER;

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
}
