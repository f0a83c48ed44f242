//! The consumer's own section, `Butler.qlikSenseCloud.consumer` (extension keys Butler does not
//! know): state, dedupe, delivery retries and tenant API behaviour. Its `destinations` are read
//! by the destinations themselves ([`crate::sinks`]).

use std::path::PathBuf;
use std::time::Duration;

use super::node::{Node, Problems};
use super::secret::Env;
use super::store::{HaConfig, parse_ha};
use crate::digest::DigestSettings;

/// Key path of the consumer's own extension section.
pub const CONSUMER: &str = "Butler.qlikSenseCloud.consumer";

/// Extension `consumer.dedupe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeConfig {
    /// `retentionHours` (default 168): how long an event id is remembered. Qlik retries and
    /// manual resends happen within the 7 days it keeps deliveries.
    pub retention: Duration,
}

/// Extension `consumer.retry`: how a failing destination is retried before the alert is parked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryConfig {
    /// `maxAttempts` (default 5), including the first try.
    pub max_attempts: u32,
    /// `initialBackoffMs` (default 1000); doubles per attempt.
    pub initial_backoff: Duration,
    /// `maxBackoffMs` (default 60000).
    pub max_backoff: Duration,
}

/// Extension `consumer.enrichment`: tenant REST API calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnrichmentConfig {
    /// `enable` (default true). False: alerts carry only what the event says.
    pub enable: bool,
    /// `timeoutSeconds` per HTTP request (default 10).
    pub request_timeout: Duration,
    /// `maxRetries` on 429 / 5xx / timeouts (default 3).
    pub max_retries: u32,
    /// `maxRetryAfterSeconds` (default 30): a longer `Retry-After` is capped to this.
    pub max_retry_after: Duration,
    /// `initialBackoffMs` (default 500) when the server gives no `Retry-After`.
    pub initial_backoff: Duration,
    /// `maxScriptLogBytes` (default 16 MiB): a longer script log is cut, keeping the tail.
    pub max_script_log_bytes: usize,
    /// `deadlineSeconds` (default 20): all tenant API calls for one event, retries and
    /// `Retry-After` pauses included, end by then; what has not arrived is left out and listed
    /// in the alert's `missing`.
    pub deadline: Duration,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            enable: true,
            request_timeout: Duration::from_secs(10),
            max_retries: 3,
            max_retry_after: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(500),
            max_script_log_bytes: 16 * 1024 * 1024,
            deadline: Duration::from_secs(20),
        }
    }
}

/// Extension `consumer.redelivery`: what happens to an alert a destination did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedeliveryConfig {
    /// `scheduleSeconds` (default [`DEFAULT_REDELIVERY_SCHEDULE`]): after an alert was parked,
    /// the delays before each automatic redelivery. Past the last one the alert stays parked
    /// for `consumer replay`. Empty: no automatic redelivery.
    pub schedule: Vec<Duration>,
    /// `holdSeconds` (default 5): how long an alert may wait at its destination (queued, or
    /// being tried) before it is written to the destination's durable queue, so that its event
    /// can be acknowledged and a slow destination never holds up the broker's window.
    pub hold: Duration,
}

/// About 27 hours in all, as the webhook services users trust do: quick at first, then hourly
/// and half-daily for an outage over a night and a day.
pub const DEFAULT_REDELIVERY_SCHEDULE: [u64; 7] = [60, 300, 1800, 7200, 18000, 36000, 36000];

impl Default for RedeliveryConfig {
    fn default() -> Self {
        Self {
            schedule: DEFAULT_REDELIVERY_SCHEDULE
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            hold: Duration::from_secs(5),
        }
    }
}

/// Extension `consumer.digest`: alert storms become one digest per destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestConfig {
    /// `enable` (default true). False: every alert is its own message, as before digests.
    pub enable: bool,
    /// `afterAlerts` (default 3, 1–1000) and `windowSeconds` (default 60, 1–86400): a
    /// destination that would get more than `afterAlerts` alerts within `windowSeconds` gets
    /// the first ones as they are and the rest of the window as one digest.
    pub settings: DigestSettings,
}

impl DigestConfig {
    /// The settings chat and email destinations use; `None` when digests are off.
    pub fn active(&self) -> Option<DigestSettings> {
        self.enable.then_some(self.settings)
    }
}

pub const DEFAULT_DIGEST: DigestSettings = DigestSettings {
    after_alerts: 3,
    window: Duration::from_secs(60),
};

impl Default for DigestConfig {
    fn default() -> Self {
        Self {
            enable: true,
            settings: DEFAULT_DIGEST,
        }
    }
}

/// `afterAlerts` and `windowSeconds` of a digest block (the consumer's, or a machine
/// destination's own).
pub(crate) fn parse_digest_settings(node: &Node<'_>, p: &mut Problems) -> DigestSettings {
    DigestSettings {
        after_alerts: u32::try_from(node.child("afterAlerts").u64_or(
            p,
            u64::from(DEFAULT_DIGEST.after_alerts),
            1,
            1000,
        ))
        .unwrap_or(DEFAULT_DIGEST.after_alerts),
        window: Duration::from_secs(node.child("windowSeconds").u64_or(
            p,
            DEFAULT_DIGEST.window.as_secs(),
            1,
            86_400,
        )),
    }
}

fn parse_digest(node: &Node<'_>, p: &mut Problems) -> DigestConfig {
    node.expect_map(p, false);
    DigestConfig {
        enable: node.child("enable").bool_or(p, true),
        settings: parse_digest_settings(node, p),
    }
}

/// Extension `consumer.watchdog`: the consumer watches Qlik's side of the chain, the webhook
/// that sends reload events to the relay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// `relayUrl`: the URL Qlik posts to (the relay's Function URL or DMZ address). The
    /// watchdog runs for every tenant with a relay URL (its own `watchdog.relayUrl`, or this).
    pub relay_url: Option<url::Url>,
    /// `intervalSeconds` (default 300, 1–86400): how often each tenant is checked.
    pub interval: Duration,
    /// `reenable` (default true): re-enable a webhook to the relay that Qlik disabled.
    pub reenable: bool,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        Self {
            relay_url: None,
            interval: Duration::from_secs(300),
            reenable: true,
        }
    }
}

fn parse_watchdog(node: &Node<'_>, p: &mut Problems) -> WatchdogConfig {
    node.expect_map(p, false);
    let d = WatchdogConfig::default();
    let relay = node.child("relayUrl");
    WatchdogConfig {
        relay_url: if relay.is_present() {
            relay.url(p, false)
        } else {
            None
        },
        interval: Duration::from_secs(node.child("intervalSeconds").u64_or(
            p,
            d.interval.as_secs(),
            1,
            86_400,
        )),
        reenable: node.child("reenable").bool_or(p, d.reenable),
    }
}

/// Default of `concurrency`: events handled at once.
pub const DEFAULT_CONCURRENCY: u64 = 32;

/// Everything in the consumer section but its destinations.
pub(crate) struct Extension {
    pub state_dir: PathBuf,
    pub dead_letter_dir: PathBuf,
    pub dedupe: DedupeConfig,
    pub retry: RetryConfig,
    pub redelivery: RedeliveryConfig,
    pub digest: DigestConfig,
    pub watchdog: WatchdogConfig,
    pub concurrency: usize,
    pub enrichment: EnrichmentConfig,
    pub ha: HaConfig,
    pub shutdown_grace: Duration,
}

/// Default of `shutdownGraceSeconds`: well inside systemd's 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub(crate) fn parse_extension(ext: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Extension {
    ext.expect_map(p, false);
    let state_dir = ext
        .child("stateDirectory")
        .opt_string(p)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".state"));
    let dead_letter_dir = ext
        .child("deadLetterDirectory")
        .opt_string(p)
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("dead-letter"));
    let dedupe = DedupeConfig {
        retention: Duration::from_secs(
            ext.at("dedupe.retentionHours").u64_or(p, 168, 1, 24 * 365) * 3600,
        ),
    };
    Extension {
        state_dir,
        dead_letter_dir,
        dedupe,
        retry: parse_retry(&ext.child("retry"), p),
        redelivery: parse_redelivery(&ext.child("redelivery"), p),
        digest: parse_digest(&ext.child("digest"), p),
        watchdog: parse_watchdog(&ext.child("watchdog"), p),
        concurrency: usize::try_from(ext.child("concurrency").u64_or(
            p,
            DEFAULT_CONCURRENCY,
            1,
            1024,
        ))
        .unwrap_or(1),
        enrichment: parse_enrichment(&ext.child("enrichment"), p),
        ha: parse_ha(ext, env, p),
        shutdown_grace: Duration::from_secs(ext.child("shutdownGraceSeconds").u64_or(
            p,
            DEFAULT_SHUTDOWN_GRACE.as_secs(),
            0,
            80,
        )),
    }
}

fn parse_retry(node: &Node<'_>, p: &mut Problems) -> RetryConfig {
    node.expect_map(p, false);
    let initial = node.child("initialBackoffMs").u64_or(p, 1000, 1, 3_600_000);
    let max = node.child("maxBackoffMs").u64_or(p, 60_000, 1, 3_600_000);
    if max < initial {
        p.add(
            format!("{}.maxBackoffMs", node.path),
            "must not be smaller than initialBackoffMs",
        );
    }
    RetryConfig {
        max_attempts: u32::try_from(node.child("maxAttempts").u64_or(p, 5, 1, 100)).unwrap_or(5),
        initial_backoff: Duration::from_millis(initial),
        max_backoff: Duration::from_millis(max),
    }
}

fn parse_redelivery(node: &Node<'_>, p: &mut Problems) -> RedeliveryConfig {
    node.expect_map(p, false);
    let d = RedeliveryConfig::default();
    let schedule_node = node.child("scheduleSeconds");
    let schedule = if schedule_node.is_present() {
        schedule_node
            .items(p)
            .iter()
            // A week at most per step: Qlik keeps deliveries 7 days, alerts older than that
            // are history.
            .filter_map(|item| item.u64_required(p, 1, 7 * 86_400))
            .map(Duration::from_secs)
            .collect()
    } else {
        d.schedule
    };
    RedeliveryConfig {
        schedule,
        hold: Duration::from_secs(
            node.child("holdSeconds")
                .u64_or(p, d.hold.as_secs(), 1, 300),
        ),
    }
}

fn parse_enrichment(node: &Node<'_>, p: &mut Problems) -> EnrichmentConfig {
    node.expect_map(p, false);
    let d = EnrichmentConfig::default();
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    EnrichmentConfig {
        enable: node.child("enable").bool_or(p, d.enable),
        request_timeout: Duration::from_secs(node.child("timeoutSeconds").u64_or(
            p,
            d.request_timeout.as_secs(),
            1,
            300,
        )),
        max_retries: u32::try_from(node.child("maxRetries").u64_or(
            p,
            u64::from(d.max_retries),
            0,
            10,
        ))
        .unwrap_or(d.max_retries),
        max_retry_after: Duration::from_secs(node.child("maxRetryAfterSeconds").u64_or(
            p,
            d.max_retry_after.as_secs(),
            0,
            600,
        )),
        initial_backoff: Duration::from_millis(node.child("initialBackoffMs").u64_or(
            p,
            millis(d.initial_backoff),
            1,
            60_000,
        )),
        max_script_log_bytes: usize::try_from(node.child("maxScriptLogBytes").u64_or(
            p,
            d.max_script_log_bytes as u64,
            1024,
            1024 * 1024 * 1024,
        ))
        .unwrap_or(d.max_script_log_bytes),
        deadline: Duration::from_secs(node.child("deadlineSeconds").u64_or(
            p,
            d.deadline.as_secs(),
            1,
            600,
        )),
    }
}
