//! What an alert fetches from the tenant API, with graceful degradation: whatever fails is
//! listed, the rest is returned.

use std::fmt;
use std::sync::Arc;

use qlik_events::{Envelope, ReloadEvent};

use crate::tenant_api::{ApiError, AppInfo, AppItem, ReloadInfo, TenantClient, UserInfo};

/// Why one piece of enrichment is missing. Never contains the JWT (see [`ApiError`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnrichError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the event carries no {0}")]
    NoId(&'static str),
    #[error("the app is not among the items the tenant returned")]
    NoItem,
    /// `enrichment.deadlineSeconds` passed before the answer arrived.
    #[error("no answer within the event's deadline of {0} s (enrichment.deadlineSeconds)")]
    Deadline(u64),
}

/// `future`, or [`EnrichError::Deadline`] once `deadline` has passed: one event's tenant API
/// calls, retries and `Retry-After` pauses included, never hold its alert up longer.
pub(crate) async fn within<T>(
    deadline: tokio::time::Instant,
    limit: std::time::Duration,
    future: impl std::future::Future<Output = Result<T, EnrichError>>,
) -> Result<T, EnrichError> {
    tokio::time::timeout_at(deadline, future)
        .await
        .unwrap_or(Err(EnrichError::Deadline(limit.as_secs())))
}

/// Which tenant API resource an entry of [`Enrichment::missing`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Resource {
    Reload,
    ScriptLog,
    App,
    AppTags,
    Owner,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Resource::Reload => "reload details",
            Resource::ScriptLog => "script log",
            Resource::App => "app details",
            Resource::AppTags => "app tags",
            Resource::Owner => "app owner",
        })
    }
}

/// Something that could not be fetched, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    pub what: Resource,
    pub reason: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.what, self.reason)
    }
}

/// What the tenant API added to an event. Partial by design: an alert goes out with whatever
/// is here, and [`Self::missing`] says what is not.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Enrichment {
    pub reload: Option<ReloadInfo>,
    /// The full script log (`text/plain`). When it was longer than the configured limit, only
    /// its tail is kept and [`Self::missing`] says so. Shared: the alert and every copy of
    /// it (one per email recipient) hold this one text.
    pub script_log: Option<Arc<str>>,
    pub app: Option<AppInfo>,
    pub app_item: Option<AppItem>,
    pub owner: Option<UserInfo>,
    pub missing: Vec<Missing>,
}

impl Enrichment {
    /// No API calls made (Butler's `basicContentOnly`, or enrichment switched off): the alert
    /// carries what the event says and the `missing` list stays empty, since nothing failed.
    pub fn event_only() -> Self {
        Self::default()
    }

    /// The app's tags, empty when unknown.
    pub fn app_tags(&self) -> &[String] {
        self.app_item
            .as_ref()
            .map(|i| i.tags.as_slice())
            .unwrap_or_default()
    }

    fn note<T>(&mut self, what: Resource, result: Result<T, EnrichError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.missing.push(Missing {
                    what,
                    reason: e.to_string(),
                });
                None
            }
        }
    }
}

impl TenantClient {
    /// Everything an alert can use, fetched concurrently. Never fails: what could not be
    /// fetched is listed in [`Enrichment::missing`] and logged (without the JWT).
    pub async fn enrich(&self, envelope: &Envelope, reload: &ReloadEvent) -> Enrichment {
        let app_id = reload.app_id.clone().or_else(|| envelope.app_id());
        let reload_id = reload.reload_id.clone();
        let event_owner = envelope.owner_id.clone();
        let limit = self.settings().deadline;
        let deadline = tokio::time::Instant::now() + limit;

        let need =
            |id: &Option<String>, what: &'static str| id.clone().ok_or(EnrichError::NoId(what));
        let reload_f = within(deadline, limit, async {
            let id = need(&reload_id, "reload id")?;
            Ok(self.reload(&id).await?)
        });
        let log_f = within(deadline, limit, async {
            let app = need(&app_id, "app id")?;
            let id = need(&reload_id, "reload id")?;
            Ok(self.script_log(&app, &id).await?)
        });
        let app_f = within(deadline, limit, async {
            let app = need(&app_id, "app id")?;
            Ok(self.app(&app).await?)
        });
        let item_f = within(deadline, limit, async {
            let app = need(&app_id, "app id")?;
            self.app_item(&app).await?.ok_or(EnrichError::NoItem)
        });
        let owner_f = async {
            match &event_owner {
                Some(owner) => {
                    Some(within(deadline, limit, async { Ok(self.user(owner).await?) }).await)
                }
                None => None,
            }
        };
        let (reload_r, log_r, app_r, item_r, owner_r) =
            tokio::join!(reload_f, log_f, app_f, item_f, owner_f);

        let mut out = Enrichment::default();
        out.reload = out.note(Resource::Reload, reload_r);
        if let Some((log, truncated)) = out.note(Resource::ScriptLog, log_r) {
            if truncated {
                out.missing.push(Missing {
                    what: Resource::ScriptLog,
                    reason: format!(
                        "longer than {} bytes: only its end was kept, so the head is not the start of the log",
                        self.settings().max_script_log_bytes
                    ),
                });
            }
            out.script_log = Some(log.into());
        }
        out.app = out.note(Resource::App, app_r);
        out.app_item = out.note(Resource::AppTags, item_r);
        // The event names the owner; older events may not, then the app's owner is used.
        let owner_r = match owner_r {
            Some(result) => result,
            None => match out.app.as_ref().and_then(|a| a.owner_id.clone()) {
                Some(owner) => {
                    within(deadline, limit, async { Ok(self.user(&owner).await?) }).await
                }
                None => Err(EnrichError::NoId("owner id")),
            },
        };
        out.owner = out.note(Resource::Owner, owner_r);

        for missing in &out.missing {
            tracing::warn!(
                tenant = %self.tenant_id(),
                event_id = %envelope.id,
                what = %missing.what,
                reason = %missing.reason,
                "tenant API: could not fetch; the alert goes out without it"
            );
        }
        out
    }
}
