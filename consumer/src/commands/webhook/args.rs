//! The command line of `consumer webhook …`.

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use qlik_events::{APP_RELOAD_FINISHED, RELOAD_FINISHED};

use crate::ConfigArgs;

pub const AFTER_HELP: &str = "\
Exit codes:
  0   success
  1   runtime failure (tenant unreachable, timeouts, HTTP 5xx after retries, unexpected answer)
  2   command-line usage error (also: no or invalid secret, several tenants and no --tenant,
      --since beyond 7d)
  65  Qlik refused the request as invalid (HTTP 400/409/422; Qlik's title and detail are printed);
      create: a webhook already sends some of the event types to the same URL, grouped
      otherwise (nothing is created; --force creates anyway, or delete it first)
  66  not found: no webhook with that id or name (HTTP 404)
  75  resend-failed: some resends failed (run it again later)
  77  the tenant did not accept the JWT (401) or its user lacks the rights (403: tenant-level
      webhooks need the TenantAdmin role)
  78  configuration invalid (every problem is printed with its key path)

The tenant URL and JWT come from the configuration (auth.jwt.token, or QLIK_TENANT_JWT /
QLIK_TENANT_JWT_<TENANTID>). The JWT and the webhook secret are never printed.";

#[derive(Args, Clone)]
pub struct Target {
    #[command(flatten)]
    pub(super) config: ConfigArgs,
    /// Tenant id from the configuration; needed when several tenants are configured.
    #[arg(long, value_name = "ID")]
    pub(super) tenant: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Level {
    /// Events of every app of the tenant (needs the TenantAdmin role).
    Tenant,
    /// Only events of what the JWT's user can access.
    User,
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Create the webhooks that send reload events to the relay. By default two: one for
    /// com.qlik.v1.app.reload.finished with the filter data.status eq "error" (Qlik accepts
    /// that filter only when it is the webhook's one event type) and one for
    /// com.qlik.v1.reload.finished without a filter (the consumer keeps the failures).
    /// Idempotent: webhooks that already send the same event types to the URL are reported,
    /// not created again (--force creates anyway). Also says whether the consumer's session
    /// exists on the broker: create it first (`consumer session create`), or the events sent
    /// before the consumer's first start are lost.
    #[command(after_help = AFTER_HELP)]
    Create {
        #[command(flatten)]
        target: Target,
        /// Webhook name; when two webhooks are created, " (app reload failed)" and
        /// " (reload finished)" are appended.
        #[arg(long)]
        name: String,
        /// The relay's URL (e.g. the Function URL output by `sam deploy`). https; http only
        /// for loopback hosts.
        #[arg(long, value_name = "URL")]
        url: String,
        /// Event type to send; repeat for several.
        #[arg(long = "event-type", value_name = "TYPE",
              default_values_t = [APP_RELOAD_FINISHED.to_owned(), RELOAD_FINISHED.to_owned()])]
        event_types: Vec<String>,
        /// A filter of your own (Qlik's SCIM syntax) on one webhook with every event type,
        /// instead of the default split.
        #[arg(long, value_name = "EXPR", conflicts_with = "no_filter")]
        filter: Option<String>,
        /// No filter: one webhook with every event type, successes included.
        #[arg(long)]
        no_filter: bool,
        /// Environment variable holding the webhook secret (32–64 characters, the one the
        /// relay verifies). When it is unset, the secret is read from stdin (not echoed on a
        /// terminal). Never taken from the command line.
        #[arg(long, value_name = "VAR", default_value = "WEBHOOK_SECRET")]
        secret_env: String,
        /// Description shown in Qlik's Webhooks page.
        #[arg(long)]
        description: Option<String>,
        /// Webhook level.
        #[arg(long, value_enum, default_value_t = Level::Tenant)]
        level: Level,
        /// Extra header Qlik sends with every delivery, stored encrypted by Qlik, its value
        /// read from an environment variable: NAME=VAR (e.g. X-Relay-Token=RELAY_TOKEN).
        #[arg(long = "header-env", value_name = "NAME=VAR")]
        header_env: Vec<String>,
        /// Create the webhooks disabled.
        #[arg(long)]
        disabled: bool,
        /// Create even when webhooks to the same URL exist. Without it, a webhook that already
        /// sends the same event types to the URL is reported and not created again (exit 0),
        /// one that shares some event types, grouped otherwise, stops the command (exit 65), and
        /// one for other event types only is noted.
        #[arg(long)]
        force: bool,
        /// Print the webhooks to the relay (the ones found and the ones created) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the tenant's webhooks: id, name, URL, event types, filter, enabled state, why Qlik
    /// disabled one (disabledReason and its code), last update.
    #[command(after_help = AFTER_HELP)]
    List {
        #[command(flatten)]
        target: Target,
        /// Print JSON (an array; secrets and header values are never included).
        #[arg(long)]
        json: bool,
    },
    /// Delete a webhook by id or by exact name. Exit 66 when there is none.
    #[command(after_help = AFTER_HELP, group(ArgGroup::new("which").required(true).args(["id", "name"])))]
    Delete {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_name = "ID")]
        id: Option<String>,
        /// Exact name; refused when several webhooks have it.
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
    },
    /// Enable a webhook (e.g. after Qlik disabled it for failing). Exit 66 when there is none.
    #[command(after_help = AFTER_HELP)]
    Enable {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Disable a webhook. Exit 66 when there is none.
    #[command(after_help = AFTER_HELP)]
    Disable {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_name = "ID")]
        id: String,
    },
    /// Resend the failed deliveries of the last DURATION: the recovery after a broker or relay
    /// outage. Failed deliveries whose event was delivered successfully later (when Qlik
    /// records the event in the delivery) are skipped. Exit 75 when some resends failed.
    #[command(name = "resend-failed", after_help = AFTER_HELP,
              group(ArgGroup::new("scope").required(true).args(["id", "url", "all"])))]
    ResendFailed {
        #[command(flatten)]
        target: Target,
        /// How far back: e.g. 30m, 2h, 3d, 1d12h; at most 7d (Qlik keeps deliveries 7 days).
        #[arg(long, value_name = "DURATION")]
        since: String,
        /// Only this webhook; repeat for several.
        #[arg(long, value_name = "ID")]
        id: Vec<String>,
        /// Only the webhooks sending to this URL (the relay's).
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Every webhook of the tenant (including ones that do not send to the relay).
        #[arg(long)]
        all: bool,
        /// Only show what would be resent.
        #[arg(long)]
        dry_run: bool,
    },
    /// What the webhook watchdog's last check found, per tenant it watches: the webhooks to
    /// the relay, whether they are enabled (and why Qlik disabled one), the last failed
    /// delivery and the resends. Read from the state store, so it works beside a running
    /// consumer (and any consumer of a group). Exit 1 when a webhook to the relay is disabled
    /// or missing, 75 when there is no check to report yet or the last one could not reach the
    /// tenant: usable as a monitoring check.
    #[command(after_help = STATUS_HELP)]
    Status {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only this tenant.
        #[arg(long, value_name = "ID")]
        tenant: Option<String>,
        /// Print the reports as JSON (an array).
        #[arg(long)]
        json: bool,
    },
}

pub const STATUS_HELP: &str = "\
Exit codes:
  0   every watched tenant has an enabled webhook to the relay
  1   a webhook to the relay is disabled, or none exists (see the report)
  2   command-line usage error (also: the watchdog is off, or --tenant is not watched)
  75  no check recorded yet for a tenant, or the last check could not reach the tenant API
      (the consumer tries again every watchdog.intervalSeconds)
  78  configuration invalid
";
