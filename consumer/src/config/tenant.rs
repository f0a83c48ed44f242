//! Qlik Cloud tenants: Butler's `Butler.qlikSenseCloud.event.mqtt.tenant` block and the
//! extension list `tenants`, each with its JWT and its alerts.

use std::collections::HashSet;
use std::fmt::Write as _;

use secrecy::SecretString;
use url::Url;

use crate::settings::{Absent, Env, SecretSource, resolve_secret};
use crate::settings::{Node, Problems};
use crate::sinks::TenantAlerts;

/// Key path of Butler's single tenant block.
pub const TENANT: &str = "Butler.qlikSenseCloud.event.mqtt.tenant";
/// Key path of the extension list of tenants.
pub const TENANTS: &str = "Butler.qlikSenseCloud.event.mqtt.tenants";
/// JWT for every tenant without its own variable.
pub const TENANT_JWT_ENV: &str = "QLIK_TENANT_JWT";

/// Environment variable for one tenant's JWT: `QLIK_TENANT_JWT_` plus the tenant id in upper
/// case with every character other than A–Z and 0–9 replaced by `_`.
pub fn tenant_jwt_env_var(tenant_id: &str) -> String {
    let suffix: String = tenant_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("QLIK_TENANT_JWT_{suffix}")
}

/// Whether a configured `id` is taken as a Qlik tenant id as it is: it consists only of the
/// characters of tenant ids — ASCII letters, digits, `-` and `_` (Qlik's ids are 32 of them, e.g.
/// `Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ`; the length is not required, so stand-ins keep working).
/// Anything else — a hostname such as `tenant.region.qlikcloud.com` (Butler's documentation
/// shows one), a URL — is resolved to the tenant id through the tenant API
/// ([`crate::tenant_id`]).
pub fn is_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// One Qlik Cloud tenant: Butler's `tenant` block, or one entry of the `tenants` extension list.
#[derive(Debug, Clone)]
pub struct TenantConfig {
    /// `id`: the tenant id Qlik puts in events (e.g. `Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ`). When
    /// the configuration gives a hostname instead ([`is_tenant_id`] is false), this holds that
    /// hostname until [`crate::tenant_id`] resolved it, then the tenant id, and
    /// [`Self::configured_id`] keeps the hostname.
    pub id: String,
    /// The configured `id` when it was not a tenant id and [`Self::id`] was resolved from it
    /// (e.g. `tenant.region.qlikcloud.com`); `None` when `id` is used as configured.
    pub configured_id: Option<String>,
    /// `tenantUrl`: base of the REST API and of `appUrl`. https, or http on a loopback host.
    pub tenant_url: Url,
    /// `authType`: only `jwt` exists.
    pub auth_type: AuthType,
    /// `auth.jwt.token`, or `QLIK_TENANT_JWT_<ID>` / `QLIK_TENANT_JWT` from the environment.
    pub jwt: SecretString,
    /// Where [`Self::jwt`] came from, for the summary.
    pub jwt_source: SecretSource,
    /// `qlikSenseUrls.qmc` → template field `qlikSenseQMC`.
    pub qmc_url: Option<String>,
    /// `qlikSenseUrls.hub` → template field `qlikSenseHub`.
    pub hub_url: Option<String>,
    /// `comment` → template field `tenantComment`.
    pub comment: Option<String>,
    /// `alert.*.reloadAppFailure` blocks that are enabled (Teams, Slack, email). A disabled
    /// block is left out unvalidated: Butler lets it hold any value.
    pub alert: TenantAlerts,
    /// Extension `watchdog.relayUrl`: the relay this tenant's webhook posts to, when it is not
    /// `consumer.watchdog.relayUrl` (tenants often use different relays).
    pub watchdog_relay_url: Option<Url>,
    /// The dotted key path of this tenant block, e.g. `Butler.qlikSenseCloud.event.mqtt.tenant`
    /// or `Butler.qlikSenseCloud.event.mqtt.tenants[1]`; useful in log lines.
    pub key_path: String,
}

impl TenantConfig {
    /// Whether [`Self::id`] is not a tenant id yet and must be resolved through the tenant API.
    pub fn needs_tenant_id(&self) -> bool {
        self.configured_id.is_none() && !is_tenant_id(&self.id)
    }

    /// This tenant with its id resolved: `id` becomes `tenant_id` everywhere (its alerts
    /// included), and the configured value is kept in [`Self::configured_id`].
    pub fn with_tenant_id(&self, tenant_id: &str) -> TenantConfig {
        let mut tenant = self.clone();
        if tenant.configured_id.is_none() {
            tenant.configured_id = Some(self.id.clone());
        }
        tenant.id = tenant_id.to_owned();
        tenant.alert = self.alert.for_tenant(tenant_id);
        tenant
    }

    /// For log lines and messages: `tenant.region.qlikcloud.com → <id>` when the id was
    /// resolved, else the id.
    pub fn display_name(&self) -> String {
        match &self.configured_id {
            Some(configured) => format!("{configured} → {}", self.id),
            None => self.id.clone(),
        }
    }

    /// `tenantUrl` without a trailing slash, the way Butler prints it in templates.
    pub fn tenant_url_str(&self) -> String {
        self.tenant_url.as_str().trim_end_matches('/').to_owned()
    }

    /// This tenant's lines in the `check-config` summary.
    pub(crate) fn summary(&self, s: &mut String) {
        let _ = writeln!(
            s,
            "  - {} at {}",
            self.display_name(),
            self.tenant_url_str()
        );
        let _ = writeln!(s, "      key: {}", self.key_path);
        if let Some(comment) = &self.comment {
            let _ = writeln!(s, "      comment: {comment}");
        }
        let _ = writeln!(s, "      JWT: *** {}", self.jwt_source);
        if let Some(qmc) = &self.qmc_url {
            let _ = writeln!(s, "      QMC link: {qmc}");
        }
        if let Some(hub) = &self.hub_url {
            let _ = writeln!(s, "      hub link: {hub}");
        }
        let alerts: Vec<String> = self
            .alert
            .iter()
            .filter_map(|a| a.alert_summary())
            .collect();
        if alerts.is_empty() {
            let _ = writeln!(s, "      alerts: none enabled");
        }
        for alert in alerts {
            let _ = writeln!(s, "      alert: {alert}");
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthType {
    Jwt,
}

pub(crate) fn parse_tenants(qsc: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Vec<TenantConfig> {
    let mut blocks: Vec<Node<'_>> = Vec::new();
    let single = qsc.at("event.mqtt.tenant");
    if single.is_present() {
        blocks.push(single);
    }
    blocks.extend(qsc.at("event.mqtt.tenants").items(p));
    if blocks.is_empty() {
        p.add(
            TENANT,
            "missing: configure Butler's tenant block (or the tenants list extension)",
        );
        return Vec::new();
    }
    let mut seen = HashSet::new();
    let mut tenants = Vec::new();
    for block in blocks {
        if !block.expect_map(p, true) {
            continue;
        }
        // Checked on the raw id so a duplicate is named even when the block has other problems.
        if let Some(id) = block.child("id").opt_string(&mut Problems::default())
            && !seen.insert(id.clone())
        {
            p.add(
                format!("{}.id", block.path),
                format!("tenant `{id}` is configured more than once"),
            );
            continue;
        }
        if let Some(tenant) = parse_tenant(&block, env, p) {
            tenants.push(tenant);
        }
    }
    tenants
}

fn parse_tenant(t: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Option<TenantConfig> {
    let id = t.child("id").real_string(p);
    let tenant_url = t.child("tenantUrl").url(p, false);
    let auth_type = match t.child("authType").string(p).as_deref() {
        Some(s) if s.eq_ignore_ascii_case("jwt") => Some(AuthType::Jwt),
        Some(other) => {
            p.add(
                format!("{}.authType", t.path),
                format!("must be `jwt` (got `{other}`)"),
            );
            None
        }
        None => None,
    };
    let jwt = id.as_deref().and_then(|id| resolve_jwt(t, id, env, p));
    let qmc_url = t.at("qlikSenseUrls.qmc").link(p);
    let hub_url = t.at("qlikSenseUrls.hub").link(p);
    let comment = t.child("comment").opt_string(p);
    let relay = t.at("watchdog.relayUrl");
    let watchdog_relay_url = if relay.is_present() {
        relay.url(p, false)
    } else {
        None
    };
    let alert = t.child("alert");
    alert.expect_map(p, false);
    let alert = crate::sinks::parse_tenant(&alert, id.as_deref().unwrap_or_default(), p);
    let (jwt, jwt_source) = jwt?;
    Some(TenantConfig {
        id: id?,
        configured_id: None,
        tenant_url: tenant_url?,
        auth_type: auth_type?,
        jwt,
        jwt_source,
        qmc_url,
        hub_url,
        comment,
        alert,
        watchdog_relay_url,
        key_path: t.path.clone(),
    })
}

/// The per-tenant variable, then the shared one, then the file; the token must look like a
/// JWT, so a wrong value is caught at start-up rather than as a 401 at the first alert.
fn resolve_jwt(
    t: &Node<'_>,
    id: &str,
    env: Env<'_>,
    p: &mut Problems,
) -> Option<(SecretString, SecretSource)> {
    use secrecy::ExposeSecret;
    let per_tenant = tenant_jwt_env_var(id);
    let (token, source) = resolve_secret(
        &t.at("auth.jwt.token"),
        env,
        &[&per_tenant, TENANT_JWT_ENV],
        Absent::Refused,
        p,
    )?;
    let token = token.expose_secret().trim().to_owned();
    let parts: Vec<&str> = token.split('.').collect();
    let looks_like_jwt = parts.len() == 3
        && parts.iter().all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '=')
        });
    if !looks_like_jwt {
        let where_ = match &source {
            SecretSource::Env(var) => format!(" (from ${var})"),
            _ => String::new(),
        };
        p.add(
            format!("{}.auth.jwt.token", t.path),
            format!("is not a JWT{where_}: expected three base64url parts separated by dots"),
        );
        return None;
    }
    Some((SecretString::from(token), source))
}
