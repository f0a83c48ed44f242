//! The consumer's own section, `Butler.qlikSenseCloud.consumer` (extension keys Butler does not
//! know): state, dedupe, delivery retries and tenant API behaviour. Its `destinations` are read
//! by the destinations themselves ([`crate::sinks`]).

use std::path::PathBuf;
use std::time::Duration;

use super::keys::{
    Count, Custom, Dir, Flag, HOURS, Kind, MILLIS, OptUrl, SECONDS, SecondsList, Section, Span,
    Sub, section, to_u32, to_usize,
};
use super::node::{Node, Problems};
use super::secret::Env;
use super::store::{HaConfig, parse_ha};
use crate::digest::DigestSettings;

/// Key path of the consumer's own extension section.
pub const CONSUMER: &str = "Butler.qlikSenseCloud.consumer";

/// About 27 hours in all, as the webhook services users trust do: quick at first, then hourly
/// and half-daily for an outage over a night and a day.
pub const DEFAULT_REDELIVERY_SCHEDULE: [u64; 7] = [60, 300, 1800, 7200, 18000, 36000, 36000];

section! {
    /// Extension `consumer.dedupe`.
    pub struct DedupeConfig at "dedupe" {
        /// how long a failed reload that was alerted on, and its event id, are remembered (hours,
        /// 1–8760): Qlik retries and resends within the 7 days it keeps deliveries
        pub retention: Duration = Span { key: "retentionHours", default: 168, min: 1, max: 24 * 365, unit: HOURS },
    }
}

section! {
    /// Extension `consumer.retry`: how a failing destination is retried before the alert is
    /// parked (every sink alike: see `crate::delivery::retry`).
    pub struct RetryConfig at "retry" check check_retry {
        /// delivery attempts per destination before the alert is parked, the first included (1–100)
        pub max_attempts: u32 = Count { key: "maxAttempts", default: 5, min: 1, max: 100, as_type: to_u32 },
        /// first delay between attempts, doubling each time (ms)
        pub initial_backoff: Duration = Span { key: "initialBackoffMs", default: 1000, min: 1, max: 3_600_000, unit: MILLIS },
        /// longest delay between attempts (ms)
        pub max_backoff: Duration = Span { key: "maxBackoffMs", default: 60_000, min: 1, max: 3_600_000, unit: MILLIS },
    }
}

fn check_retry(retry: &RetryConfig, node: &Node<'_>, p: &mut Problems) {
    if retry.max_backoff < retry.initial_backoff {
        p.add(
            format!("{}.maxBackoffMs", node.path),
            "must not be smaller than initialBackoffMs",
        );
    }
}

section! {
    /// Extension `consumer.redelivery`: what happens to an alert a destination did not take.
    pub struct RedeliveryConfig at "redelivery" {
        /// after an alert was parked, the delays before each automatic redelivery (each at most a
        /// week: Qlik keeps deliveries 7 days); past the last the alert waits for `consumer
        /// replay`; empty: no automatic redelivery
        pub schedule: Vec<Duration> = SecondsList { key: "scheduleSeconds", default: &DEFAULT_REDELIVERY_SCHEDULE, min: 1, max: 7 * 86_400 },
        /// how long an alert may wait at its destination before it is held on disk, so its event
        /// can be acknowledged (seconds, 1–300)
        pub hold: Duration = Span { key: "holdSeconds", default: 5, min: 1, max: 300, unit: SECONDS },
    }
}

/// `afterAlerts`, in the consumer's `digest` and in a machine destination's own block.
const AFTER_ALERTS: Count<u32> = Count {
    key: "afterAlerts",
    default: 3,
    min: 1,
    max: 1000,
    as_type: to_u32,
};
/// `windowSeconds`, likewise.
const WINDOW_SECONDS: Span = Span {
    key: "windowSeconds",
    default: 60,
    min: 1,
    max: 86_400,
    unit: SECONDS,
};

section! {
    /// Extension `consumer.digest`: alert storms become one digest per destination.
    pub struct DigestConfig at "digest" {
        /// `false`: every alert is a message of its own, as before digests
        pub enable: bool = Flag { key: "enable", default: true },
        /// a destination that would get more than this many alerts within `windowSeconds` gets
        /// the first ones as they are and the rest of the window as one digest (1–1000)
        pub after_alerts: u32 = AFTER_ALERTS,
        /// how long a digest window lasts, from a destination's first alert in it (seconds)
        pub window: Duration = WINDOW_SECONDS,
    }
}

impl DigestConfig {
    pub fn settings(&self) -> DigestSettings {
        DigestSettings {
            after_alerts: self.after_alerts,
            window: self.window,
        }
    }

    /// The settings chat and email destinations use; `None` when digests are off.
    pub fn active(&self) -> Option<DigestSettings> {
        self.enable.then(|| self.settings())
    }
}

pub const DEFAULT_DIGEST: DigestSettings = DigestSettings {
    after_alerts: 3,
    window: Duration::from_secs(60),
};

/// `afterAlerts` and `windowSeconds` of a machine destination's own digest block, with the
/// same declarations (and defaults) as the consumer's.
pub(crate) fn parse_digest_settings(node: &Node<'_>, p: &mut Problems) -> DigestSettings {
    DigestSettings {
        after_alerts: AFTER_ALERTS.read(&node.child(AFTER_ALERTS.key), p),
        window: WINDOW_SECONDS.read(&node.child(WINDOW_SECONDS.key), p),
    }
}

section! {
    /// Extension `consumer.watchdog`: the consumer watches Qlik's side of the chain, the
    /// webhook that sends reload events to the relay.
    pub struct WatchdogConfig at "watchdog" {
        /// the URL Qlik posts to (the relay's Function URL or DMZ address); the watchdog runs for
        /// every tenant with a relay URL, its own `watchdog.relayUrl` or this
        pub relay_url: Option<url::Url> = OptUrl { key: "relayUrl" },
        /// how often each tenant is checked (seconds)
        pub interval: Duration = Span { key: "intervalSeconds", default: 300, min: 1, max: 86_400, unit: SECONDS },
        /// re-enable a webhook to the relay that Qlik disabled
        pub reenable: bool = Flag { key: "reenable", default: true },
    }
}

section! {
    /// Extension `consumer.enrichment`: tenant REST API calls.
    pub struct EnrichmentConfig at "enrichment" {
        /// `false`: alerts carry only what the event says, no tenant API calls
        pub enable: bool = Flag { key: "enable", default: true },
        /// per tenant API request (seconds)
        pub request_timeout: Duration = Span { key: "timeoutSeconds", default: 10, min: 1, max: 300, unit: SECONDS },
        /// retries on 429, 5xx, timeouts and connection errors
        pub max_retries: u32 = Count { key: "maxRetries", default: 3, min: 0, max: 10, as_type: to_u32 },
        /// a longer `Retry-After` from the tenant is cut to this (seconds)
        pub max_retry_after: Duration = Span { key: "maxRetryAfterSeconds", default: 30, min: 0, max: 600, unit: SECONDS },
        /// delay between retries when the tenant sends no `Retry-After`, doubling (ms)
        pub initial_backoff: Duration = Span { key: "initialBackoffMs", default: 500, min: 1, max: 60_000, unit: MILLIS },
        /// a longer script log keeps only its end, where the error is (bytes)
        pub max_script_log_bytes: usize = Count { key: "maxScriptLogBytes", default: 16 * 1024 * 1024, min: 1024, max: 1024 * 1024 * 1024, as_type: to_usize },
        /// all tenant API calls for one event end by then; what has not arrived is listed in the
        /// alert's `missing` (seconds)
        pub deadline: Duration = Span { key: "deadlineSeconds", default: 20, min: 1, max: 600, unit: SECONDS },
    }
}

/// Default of `concurrency`: events handled at once.
pub const DEFAULT_CONCURRENCY: u64 = 32;

/// Default of `shutdownGraceSeconds`: well inside systemd's 90 s stop timeout.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

const STATE_DIRECTORY: Dir = Dir {
    key: "stateDirectory",
    default: ".state",
};
/// Its default follows `stateDirectory`, so it is read on its own.
const DEAD_LETTER_DIRECTORY: Custom = Custom {
    key: "deadLetterDirectory",
    default: "<stateDirectory>/dead-letter",
};
const CONCURRENCY: Count<usize> = Count {
    key: "concurrency",
    default: DEFAULT_CONCURRENCY,
    min: 1,
    max: 1024,
    as_type: to_usize,
};
const SHUTDOWN_GRACE: Span = Span {
    key: "shutdownGraceSeconds",
    default: 10,
    min: 0,
    max: 80,
    unit: SECONDS,
};

/// The consumer's own section, `Butler.qlikSenseCloud.consumer`, but its destinations (which
/// the destinations read themselves). Kept whole in [`crate::config::ConsumerConfig`].
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// `stateDirectory` (default `.state`): what must survive restarts.
    pub state_dir: PathBuf,
    /// `deadLetterDirectory` (default `<stateDirectory>/dead-letter`): parked and held alerts.
    pub dead_letter_dir: PathBuf,
    pub dedupe: DedupeConfig,
    pub retry: RetryConfig,
    pub redelivery: RedeliveryConfig,
    pub digest: DigestConfig,
    pub watchdog: WatchdogConfig,
    /// `concurrency` (default 32, 1–1024): events handled at once.
    pub concurrency: usize,
    pub enrichment: EnrichmentConfig,
    /// `stateStore`, `claimLeaseSeconds`, `metrics.listen`.
    pub ha: HaConfig,
    /// `shutdownGraceSeconds` (default 10, 0–80): on SIGTERM, how long the messages in hand
    /// may take to finish.
    pub shutdown_grace: Duration,
}

impl ConsumerSettings {
    pub(crate) fn read(ext: &Node<'_>, env: Env<'_>, p: &mut Problems) -> Self {
        ext.expect_map(p, false);
        let state_dir = STATE_DIRECTORY.read(&ext.child(STATE_DIRECTORY.key), p);
        let dead_letter_dir = DEAD_LETTER_DIRECTORY
            .at(ext)
            .opt_string(p)
            .map_or_else(|| state_dir.join("dead-letter"), PathBuf::from);
        Self {
            state_dir,
            dead_letter_dir,
            dedupe: sub(ext, p),
            retry: sub(ext, p),
            redelivery: sub(ext, p),
            digest: sub(ext, p),
            watchdog: sub(ext, p),
            concurrency: CONCURRENCY.read(&ext.child(CONCURRENCY.key), p),
            enrichment: sub(ext, p),
            ha: parse_ha(ext, env, p),
            shutdown_grace: SHUTDOWN_GRACE.read(&ext.child(SHUTDOWN_GRACE.key), p),
        }
    }

    /// Every key of the section (below `Butler.qlikSenseCloud.consumer`) with its default, as
    /// the configuration reference must list them.
    pub fn keys() -> Vec<super::keys::KeyDoc> {
        let mut keys = vec![
            STATE_DIRECTORY
                .docs("", "state that must survive restarts")
                .remove(0),
            DEAD_LETTER_DIRECTORY.doc(""),
            CONCURRENCY.docs("", "events handled at once").remove(0),
            SHUTDOWN_GRACE
                .docs("", "on SIGTERM, how long the messages in hand may take")
                .remove(0),
        ];
        keys.extend(HaConfig::keys());
        keys.extend(DedupeConfig::keys(DedupeConfig::KEY));
        keys.extend(RetryConfig::keys(RetryConfig::KEY));
        keys.extend(RedeliveryConfig::keys(RedeliveryConfig::KEY));
        keys.extend(DigestConfig::keys(DigestConfig::KEY));
        keys.extend(WatchdogConfig::keys(WatchdogConfig::KEY));
        keys.extend(EnrichmentConfig::keys(EnrichmentConfig::KEY));
        keys
    }

    /// The section's values, one line per section, for `check-config`.
    pub fn summary_lines(&self) -> Vec<String> {
        vec![
            format!("{}: {}", DedupeConfig::KEY, Section::summary(&self.dedupe)),
            format!("{}: {}", RetryConfig::KEY, Section::summary(&self.retry)),
            format!(
                "{}: {}",
                RedeliveryConfig::KEY,
                Section::summary(&self.redelivery)
            ),
            format!("{}: {}", DigestConfig::KEY, Section::summary(&self.digest)),
            format!(
                "{}: {}",
                WatchdogConfig::KEY,
                Section::summary(&self.watchdog)
            ),
            format!(
                "{}: {}",
                EnrichmentConfig::KEY,
                Section::summary(&self.enrichment)
            ),
            format!(
                "{} {}, {} {}",
                CONCURRENCY.key,
                self.concurrency,
                SHUTDOWN_GRACE.key,
                SHUTDOWN_GRACE.show(&self.shutdown_grace)
            ),
        ]
    }
}

/// A sub-section, read from its key below `ext`.
fn sub<T: Section>(ext: &Node<'_>, p: &mut Problems) -> T {
    Sub::<T>(std::marker::PhantomData).read(&ext.child(T::KEY), p)
}
