//! A tenant configured by hostname: Butler's documentation shows `id: tenant.region.qlikcloud.com`,
//! but events carry the tenant's opaque id. Such an `id` ([`crate::config::is_tenant_id`] false)
//! is resolved through the tenant API with the tenant's JWT — `GET <tenantUrl>/api/v1/users/me`
//! answers with the JWT user's `tenantId` — and the configuration then uses that id everywhere
//! (filtering, topics, state, metrics labels, alerts), keeping the hostname for messages.
//!
//! `check-config` resolves once ([`resolve_all`]); `run` resolves before it subscribes,
//! retrying while the tenant API cannot be reached ([`crate::pipeline`]). An `id` that is a
//! tenant id already makes no call.

use std::collections::HashSet;

use crate::config::{ConsumerConfig, EnrichmentConfig, Problem, TenantConfig, is_tenant_id};
use crate::tenant_api::{ApiError, TenantClient};

/// Why a tenant's id could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    /// The tenant refused the JWT (401) or its user may not read itself (403): final.
    #[error("the tenant refused the JWT: GET {url} answered {error}")]
    Refused { url: String, error: ApiError },
    /// An answer that cannot give the id (no `tenantId`, not found, not JSON…): final.
    #[error("cannot resolve the tenant id: GET {url}: {reason}")]
    Invalid { url: String, reason: String },
    /// The tenant API could not be reached or failed (timeouts, connection errors, 408, 429,
    /// 5xx, after the client's own retries): `run` tries again later.
    #[error("tenant API unavailable: GET {url}: {error}")]
    Unavailable { url: String, error: ApiError },
}

impl ResolveError {
    /// Whether trying again cannot help (the configuration must change).
    pub fn is_final(&self) -> bool {
        !matches!(self, ResolveError::Unavailable { .. })
    }
}

/// The tenant id behind `tenant`'s configured `id`: one `GET /api/v1/users/me` with its JWT,
/// with the timeouts and retries of `consumer.enrichment`.
pub async fn resolve(
    tenant: &TenantConfig,
    settings: &EnrichmentConfig,
) -> Result<String, ResolveError> {
    let client = TenantClient::new(tenant, settings).map_err(|error| ResolveError::Invalid {
        url: tenant.tenant_url_str(),
        reason: error.to_string(),
    })?;
    let url = client.url(&["users", "me"]).to_string();
    match client.users_me().await {
        Ok(me) => {
            let id = me.tenant_id.unwrap_or_default().trim().to_owned();
            if is_tenant_id(&id) {
                Ok(id)
            } else {
                Err(ResolveError::Invalid {
                    url,
                    reason: format!("`tenantId` {id:?} in the answer is not a tenant id"),
                })
            }
        }
        Err(error) => Err(classify(url, error)),
    }
}

fn classify(url: String, error: ApiError) -> ResolveError {
    match &error {
        ApiError::Status {
            status: 401 | 403, ..
        } => ResolveError::Refused { url, error },
        ApiError::Status { status, .. } if *status == 408 || *status == 429 || *status >= 500 => {
            ResolveError::Unavailable { url, error }
        }
        ApiError::Timeout { .. } | ApiError::Transport { .. } => {
            ResolveError::Unavailable { url, error }
        }
        ApiError::Status { .. }
        | ApiError::TooLarge { .. }
        | ApiError::Body(_)
        | ApiError::Client(_) => ResolveError::Invalid {
            url,
            reason: error.to_string(),
        },
    }
}

/// The problem at the tenant's `id` key for a failed resolution.
pub fn problem(tenant: &TenantConfig, error: &ResolveError) -> Problem {
    Problem {
        path: format!("{}.id", tenant.key_path),
        message: format!("`{}` is not a tenant id, and {error}", tenant.id),
    }
}

/// `config` with the tenants at the given indexes given their resolved ids. Two tenants that
/// end up with one id are a problem, as two equal configured ids are.
pub fn apply(
    config: &ConsumerConfig,
    resolved: &[(usize, String)],
) -> Result<ConsumerConfig, Problem> {
    let mut config = config.clone();
    for (index, id) in resolved {
        if let Some(tenant) = config.tenants.get_mut(*index) {
            *tenant = tenant.with_tenant_id(id);
        }
    }
    let mut seen = HashSet::new();
    for tenant in &config.tenants {
        if !seen.insert(tenant.id.as_str()) {
            return Err(Problem {
                path: format!("{}.id", tenant.key_path),
                message: format!(
                    "`{}` is tenant `{}`, which is configured more than once",
                    tenant.configured_id.as_deref().unwrap_or(&tenant.id),
                    tenant.id
                ),
            });
        }
    }
    Ok(config)
}

/// Every tenant given by hostname resolved once (`check-config`); without any, no call and the
/// configuration as it is. On failure, one problem per tenant that could not be resolved.
pub async fn resolve_all(config: &ConsumerConfig) -> Result<ConsumerConfig, Vec<Problem>> {
    let mut resolved = Vec::new();
    let mut problems = Vec::new();
    for (index, tenant) in config.tenants.iter().enumerate() {
        if !tenant.needs_tenant_id() {
            continue;
        }
        match resolve(tenant, &config.consumer.enrichment).await {
            Ok(id) => resolved.push((index, id)),
            Err(e) => problems.push(problem(tenant, &e)),
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    apply(config, &resolved).map_err(|p| vec![p])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_and_urls_are_resolved_tenant_ids_are_not() {
        assert!(is_tenant_id("Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ"));
        assert!(is_tenant_id("a-b_C9"));
        assert!(!is_tenant_id("tenant.region.qlikcloud.com"));
        assert!(!is_tenant_id("https://tenant.eu.qlikcloud.com"));
        assert!(!is_tenant_id(""));
        assert!(!is_tenant_id("my tenant"));
    }

    #[test]
    fn refusals_and_bad_answers_are_final_outages_are_not() {
        let status = |status| ApiError::Status {
            status,
            attempts: 1,
            body: String::new(),
        };
        let url = || "http://t/api/v1/users/me".to_owned();
        assert!(matches!(
            classify(url(), status(401)),
            ResolveError::Refused { .. }
        ));
        assert!(classify(url(), status(403)).is_final());
        assert!(classify(url(), status(404)).is_final());
        assert!(classify(url(), ApiError::Body("x".into())).is_final());
        assert!(!classify(url(), status(503)).is_final());
        assert!(!classify(url(), status(429)).is_final());
        assert!(!classify(url(), ApiError::Timeout { attempts: 2 }).is_final());
    }

    #[test]
    fn a_resolved_tenant_keeps_its_hostname_and_its_alerts_follow_the_id() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slack = "slackNotification: {reloadAppFailure: {enable: true, \
                     webhookURL: 'https://hooks.slack.com/services/T/B/x', messageType: basic, \
                     basicMsgTemplate: x}}";
        let config = crate::config::for_tests(dir.path(), slack, "");
        let mut hostname = config.clone();
        hostname.tenants[0].id = "tenant.region.qlikcloud.com".to_owned();
        assert!(hostname.tenants[0].needs_tenant_id());
        let resolved =
            apply(&hostname, &[(0, "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ".into())]).expect("applies");
        let tenant = &resolved.tenants[0];
        assert!(!tenant.needs_tenant_id());
        assert_eq!(tenant.id, "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ");
        assert_eq!(
            tenant.display_name(),
            "tenant.region.qlikcloud.com → Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ"
        );
        let sinks = resolved
            .build_sinks(crate::sinks::Purpose::Run)
            .expect("builds");
        assert!(
            sinks
                .iter()
                .any(|s| s.name() == "slack:Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ"),
            "{:?}",
            sinks.iter().map(|s| s.name()).collect::<Vec<_>>()
        );
        assert!(
            resolved
                .tenant("Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ")
                .is_some()
        );
        assert!(!config.tenants[0].needs_tenant_id(), "`T` is used as is");
    }
}
