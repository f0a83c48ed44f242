//! Destinations for alerts. Every destination is one file holding its settings (a
//! [`Destination`]: read from Butler's keys, summarized for `check-config`, built into a
//! [`Sink`]) beside its send code; a new destination is that file plus one line in [`REGISTRY`].
//!
//! Sinks make one attempt per call. Retries, rate limits and parking are added around every sink
//! by [`crate::delivery`], so no sink has its own retry loop.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use crate::alert::Alert;
use crate::digest::{Digest, DigestSettings};
use crate::settings::{BrokerConfig, DigestConfig, Node, Problems, SmtpConfig};

pub mod chat;
pub mod http;
pub mod preview;
pub mod template;
pub mod template_fields;

pub use preview::{EmailPreview, Preview};

/// Declares each destination's module and lists its [`Kind`] in [`REGISTRY`].
macro_rules! registry {
    ($($destination:ident),* $(,)?) => {
        $(pub mod $destination;)*

        /// Every kind of destination, in the order `check-config` lists them and alerts are
        /// handed out. Butler's per-tenant alerts come tenant by tenant at the place of the
        /// first of them.
        pub(crate) const REGISTRY: &[Kind] = &[$($destination::KIND),*];
    };
}

registry![log, script_log_disk, teams, slack, email, webhook, mqtt,];

/// Why one delivery attempt failed. Messages never hold a secret (webhook URLs are masked).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// Worth retrying: connection refused, timeout, 5xx, 429.
    #[error("{0}")]
    Transient(String),
    /// Retrying the same alert cannot succeed (4xx, template error): park it at once.
    #[error("{0}")]
    Permanent(String),
    /// The destination asked us to slow down (`429` with `Retry-After`): the whole destination
    /// pauses that long. Not a failed attempt.
    #[error("{message}")]
    Throttled {
        message: String,
        retry_after: Duration,
    },
}

impl SinkError {
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_) | SinkError::Throttled { .. })
    }
}

/// A destination. Implementations write `async fn send(&self, alert: &Alert) -> Result<…>`.
pub trait Sink: Send + Sync {
    /// Stable name, used in logs, rate-limit state and parked-alert files (e.g. `slack:<tenant>`).
    fn name(&self) -> &str;

    /// Whether this alert is for this destination (tenant, Butler's `alertEnableByTag`). By
    /// default every reload alert and digest, and no notice from the consumer itself: notices
    /// go to the destinations people read (chat, email, the log), which take them; a machine
    /// reading this destination parses reload alerts and digests, and a document of a third
    /// kind would only surprise it.
    fn accepts(&self, alert: &Alert) -> bool {
        alert.notice.is_none()
    }

    /// Butler's per-app `rateLimit`: at most one alert per app in this window. Zero: none.
    /// For a sink with [`Self::recipients`], per app and recipient.
    fn rate_limit(&self) -> Duration {
        Duration::ZERO
    }

    /// `None` (the default): one delivery of the alert. `Some(list)`: the sink sends each
    /// recipient a copy of its own (email), and the delivery layer rate-limits, retries and
    /// parks each copy on its own, handing [`Self::send`] the alert with
    /// [`Alert::recipient`] set. So one rejected address neither blocks nor repeats the
    /// others. An empty list means nobody is to get this alert.
    fn recipients(&self, _alert: &Alert) -> Option<Vec<String>> {
        None
    }

    /// This destination's digest settings ([`crate::digest`]); `None` (the default): every
    /// alert is a message of its own. Chat and email destinations follow
    /// `consumer.digest`; machine destinations only their own `digest` block.
    fn digest(&self) -> Option<DigestSettings> {
        None
    }

    /// Whether a digest part fits in one message of this destination (Slack's block and text
    /// limits, Teams' card size). Delivery splits a digest into as few parts as fit.
    fn digest_fits(&self, _digest: &Digest) -> bool {
        true
    }

    /// One delivery attempt. An alert with [`Alert::digest`] set is a digest part: the
    /// destination sends its digest message.
    fn send(&self, alert: &Alert) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// What [`Self::send`] would send for this alert, rendered by the same code, sending and
    /// storing nothing (`consumer preview`). For a sink with [`Self::recipients`], the alert
    /// carries the recipient, as in delivery.
    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError>;
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The template context of a digest part: [`Digest::context`] plus `tenantId` (the tenant the
/// destination belongs to), as [`Alert::for_digest`] builds it. Rendered from the digest, not
/// from the alert's copy, so that [`Sink::digest_fits`], which has only the digest, measures
/// exactly what [`Sink::send`] sends.
pub(crate) fn digest_context(
    digest: &Digest,
    tenant_id: &str,
) -> serde_json::Map<String, serde_json::Value> {
    let mut context = digest.context();
    context.insert("tenantId".into(), tenant_id.into());
    context
}

/// The object-safe form of [`Sink`], implemented for every sink, so the pipeline can hold a list.
pub trait DynSink: Send + Sync {
    fn name(&self) -> &str;
    fn accepts(&self, alert: &Alert) -> bool;
    fn rate_limit(&self) -> Duration;
    fn recipients(&self, alert: &Alert) -> Option<Vec<String>>;
    fn digest(&self) -> Option<DigestSettings>;
    fn digest_fits(&self, digest: &Digest) -> bool;
    fn send_boxed<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>>;
    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError>;
}

impl<S: Sink> DynSink for S {
    fn name(&self) -> &str {
        Sink::name(self)
    }

    fn accepts(&self, alert: &Alert) -> bool {
        Sink::accepts(self, alert)
    }

    fn rate_limit(&self) -> Duration {
        Sink::rate_limit(self)
    }

    fn recipients(&self, alert: &Alert) -> Option<Vec<String>> {
        Sink::recipients(self, alert)
    }

    fn digest(&self) -> Option<DigestSettings> {
        Sink::digest(self)
    }

    fn digest_fits(&self, digest: &Digest) -> bool {
        Sink::digest_fits(self, digest)
    }

    fn send_boxed<'a>(&'a self, alert: &'a Alert) -> BoxFuture<'a, Result<(), SinkError>> {
        Box::pin(Sink::send(self, alert))
    }

    fn preview(&self, alert: &Alert) -> Result<Preview, SinkError> {
        Sink::preview(self, alert)
    }
}

/// A sink as the pipeline holds it.
pub type SharedSink = Arc<dyn DynSink>;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot create the HTTP client: {0}")]
    Http(String),
    #[error("{key}: template file {path}: {reason}")]
    Template {
        key: String,
        path: String,
        reason: String,
    },
    #[error("MQTT destination: {0}")]
    Mqtt(String),
    #[error("{key}: {reason}")]
    Email { key: String, reason: String },
}

/// How a kind of destination reads its keys. Problems go to `Problems`, with their key path.
pub(crate) enum Kind {
    /// Read once from the whole document (`node` is `Butler`): the consumer's own destinations
    /// and Butler's script log to disk. Yields every destination of the kind that is enabled.
    Global(fn(node: &Node<'_>, p: &mut Problems) -> Vec<Arc<dyn Destination>>),
    /// Read from each tenant's `alert` block (`node`), for Butler's per-tenant alerts, with the
    /// tenant's id. `None` when the block is absent or disabled.
    Tenant(fn(node: &Node<'_>, tenant_id: &str, p: &mut Problems) -> Option<Arc<dyn Destination>>),
}

/// What a destination needs from the tenant REST API for an alert, ordered by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TenantApi {
    /// Butler's `basicContentOnly`: the event's content is enough.
    Nothing,
    /// `basicContentOnly` with `alertEnableByTag`: the app's tags, to decide whether to send.
    Tags,
    /// Everything enrichment fetches (script log, reload, app, owner).
    Everything,
}

/// What building (and summarizing) a destination needs from the rest of the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// `consumer.digest`: chat and email destinations follow it; `enable: false` also turns
    /// off a machine destination's own `digest` block.
    pub digest: &'a DigestConfig,
    /// `Butler.emailNotification.smtp`, when an email alert needs it.
    pub smtp: Option<&'a SmtpConfig>,
    /// The broker the MQTT re-publish uses (the consumer's own).
    pub broker: &'a BrokerConfig,
}

/// One configured destination: its settings, validated at load time.
pub trait Destination: Any + fmt::Debug + Send + Sync {
    /// The name of the sink [`Self::build`] makes ([`Sink::name`]), e.g. `slack:<tenant>`, so
    /// a destination that does not build can be named as its sink would be.
    fn sink_name(&self) -> String;

    /// The line under "Destinations for failed reloads:" in `check-config` (secrets masked);
    /// `None`: not listed.
    fn summary(&self, config: &Context<'_>) -> Option<String>;

    /// For Butler's per-tenant alerts: the details on the tenant's `alert:` line.
    fn alert_summary(&self) -> Option<String> {
        None
    }

    /// The Handlebars templates of the configuration this destination renders (the shipped
    /// ones left out), for `check-config`'s check of the fields they use.
    fn templates(&self) -> Vec<TemplateUse> {
        Vec::new()
    }

    /// What this destination needs from the tenant API; `None`: no need of its own (it shows
    /// whatever the alert carries).
    fn tenant_api(&self) -> Option<TenantApi> {
        Some(TenantApi::Everything)
    }

    /// The sink, ready to send. Reads and compiles templates, so `check-config` calls it too;
    /// nothing connects before the first send.
    fn build(
        &self,
        config: &Context<'_>,
        client: &reqwest::Client,
    ) -> Result<SharedSink, BuildError>;

    /// For Butler's per-tenant alerts: this destination for the tenant whose id was resolved
    /// to `tenant_id` (a hostname was configured). `None`: it does not depend on the tenant id.
    fn for_tenant(&self, _tenant_id: &str) -> Option<Arc<dyn Destination>> {
        None
    }

    /// [`Self::build`] for a [`Purpose`]. Only a destination whose connections carry an
    /// identity of their own (MQTT's client id) builds differently.
    fn build_for(
        &self,
        config: &Context<'_>,
        client: &reqwest::Client,
        _purpose: Purpose,
    ) -> Result<SharedSink, BuildError> {
        self.build(config, client)
    }
}

/// A template a destination renders: the key that sets it, the template itself, and what it
/// is rendered with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateUse {
    /// E.g. `….slackNotification.reloadAppFailure.templateFile`.
    pub key: String,
    pub source: TemplateSource,
    pub renders: Renders,
}

/// Where a template's text is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TemplateSource {
    File(std::path::PathBuf),
    /// Written in the key itself (`basicMsgTemplate`, `subject`).
    Inline(String),
}

/// The context a template is rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renders {
    /// One failed reload: the alert context (docs/configuration.md, "Alert template fields").
    Alert,
    /// A digest part (docs/configuration.md, "Digest template fields").
    Digest,
}

impl TemplateUse {
    pub(crate) fn file(key: String, path: &std::path::Path, renders: Renders) -> Self {
        Self {
            key,
            source: TemplateSource::File(path.to_owned()),
            renders,
        }
    }

    pub(crate) fn inline(key: String, text: &str) -> Self {
        Self {
            key,
            source: TemplateSource::Inline(text.to_owned()),
            renders: Renders::Alert,
        }
    }
}

/// What the sinks are built for. A broker drops the older of two connections with one client
/// id, so `consumer replay` next to a running consumer must not connect under the running
/// consumer's ids.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Purpose {
    /// `consumer run` (and `check-config`, which builds what `run` would).
    #[default]
    Run,
    /// `consumer replay`.
    Replay,
    /// `consumer preview`: sinks that render and never send (nothing connects).
    Preview,
}

/// Destinations in the order they were read, with typed access for whoever needs one kind.
/// Shared, so a configuration stays cheap to clone.
#[derive(Debug, Default, Clone)]
pub struct DestinationList(Vec<(usize, Arc<dyn Destination>)>);

/// The consumer's own destinations and Butler's script log to disk, for every tenant.
pub type Destinations = DestinationList;
/// A tenant's alerts: Butler's `alert.*.reloadAppFailure` blocks that are enabled.
pub type TenantAlerts = DestinationList;

impl DestinationList {
    pub fn iter(&self) -> impl Iterator<Item = &dyn Destination> {
        self.0.iter().map(|(_, d)| d.as_ref())
    }

    /// Every destination of type `T`.
    pub fn all<T: Destination>(&self) -> impl Iterator<Item = &T> {
        self.iter()
            .filter_map(|d| (d as &dyn Any).downcast_ref::<T>())
    }

    /// These destinations for the tenant whose id was resolved to `tenant_id`
    /// ([`Destination::for_tenant`]).
    pub fn for_tenant(&self, tenant_id: &str) -> DestinationList {
        DestinationList(
            self.0
                .iter()
                .map(|(kind, d)| (*kind, d.for_tenant(tenant_id).unwrap_or_else(|| d.clone())))
                .collect(),
        )
    }

    /// The first destination of type `T`.
    pub fn get<T: Destination>(&self) -> Option<&T> {
        self.all::<T>().next()
    }
}

/// `Butler.qlikSenseCloud.consumer.destinations.<key>`: where the consumer's own destinations
/// are configured (`butler` is the `Butler` node).
pub(crate) fn extension_key<'v>(butler: &Node<'v>, key: &str) -> Node<'v> {
    butler.at("qlikSenseCloud.consumer.destinations").child(key)
}

/// Reads every global destination (`butler` is the `Butler` node), in [`REGISTRY`] order.
pub(crate) fn parse_global(butler: &Node<'_>, p: &mut Problems) -> Destinations {
    let mut list = Vec::new();
    for (index, kind) in REGISTRY.iter().enumerate() {
        if let Kind::Global(parse) = kind {
            list.extend(parse(butler, p).into_iter().map(|d| (index, d)));
        }
    }
    DestinationList(list)
}

/// Reads a tenant's alerts (`alert` is its `alert` node), in [`REGISTRY`] order.
pub(crate) fn parse_tenant(alert: &Node<'_>, tenant_id: &str, p: &mut Problems) -> TenantAlerts {
    let mut list = Vec::new();
    for (index, kind) in REGISTRY.iter().enumerate() {
        if let Kind::Tenant(parse) = kind {
            list.extend(parse(alert, tenant_id, p).map(|d| (index, d)));
        }
    }
    DestinationList(list)
}

/// Every destination in [`REGISTRY`] order: the global ones (`global`) of kinds before the
/// first per-tenant kind, then each tenant's alerts, then the remaining global ones.
pub fn in_order<'a>(
    global: &'a DestinationList,
    tenants: impl Iterator<Item = &'a DestinationList>,
) -> Vec<&'a dyn Destination> {
    let first_tenant_kind = REGISTRY
        .iter()
        .position(|k| matches!(k, Kind::Tenant(_)))
        .unwrap_or(REGISTRY.len());
    let before = global
        .0
        .iter()
        .filter(|(kind, _)| *kind < first_tenant_kind);
    let after = global
        .0
        .iter()
        .filter(|(kind, _)| *kind >= first_tenant_kind);
    let tenants = tenants.flat_map(|list| list.0.iter());
    before
        .chain(tenants)
        .chain(after)
        .map(|(_, d)| d.as_ref())
        .collect()
}

/// The sinks of `destinations` (in the order given), built for `purpose`.
pub fn build(
    destinations: &[&dyn Destination],
    context: &Context<'_>,
    purpose: Purpose,
) -> Result<Vec<SharedSink>, BuildError> {
    let client = http::client()?;
    destinations
        .iter()
        .map(|d| d.build_for(context, &client, purpose))
        .collect()
}
