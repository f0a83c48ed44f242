//! The one trait every state backend implements: files in the state directory (one instance),
//! Redis / Valkey (several instances), and memory (unit tests). Each method is one decision the
//! group must agree on; [`super::Claims`] builds the claim protocol (waiting, leases, takeover)
//! on top, the same for every backend.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use super::redis_store::ClaimState;
use super::redis_store::RedisStore;
use crate::digest::DigestSettings;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Butler's per-app `rateLimit` window at one destination, as a claim uses it.
#[derive(Debug, Clone, Copy)]
pub struct RateWindow<'a> {
    /// The sink's name.
    pub sink: &'a str,
    /// The app id, or `<appId>|<recipient>` for a sink with recipients.
    pub key: &'a str,
    /// The `rateLimit`; zero: no window.
    pub length: Duration,
    /// The claim key the alert is handled under (tenant + reload).
    pub holder: &'a str,
}

impl<'a> RateWindow<'a> {
    pub fn new(sink: &'a str, key: &'a str, length: Duration, holder: &'a str) -> Self {
        Self {
            sink,
            key,
            length,
            holder,
        }
    }
}

/// What became of an alert in its destination's digest window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Folding {
    /// Among the window's first `afterAlerts`: sent as it is.
    Single,
    /// Kept for the digest of this window, sent when it closes.
    Folded { window: String },
}

/// A digest window whose time is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DueDigest {
    pub destination: String,
    /// The window's id: its start, Unix milliseconds.
    pub window: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

#[derive(Debug, thiserror::Error)]
#[error("state store {store}: {reason}")]
pub struct StoreError {
    pub store: String,
    pub reason: String,
}

/// Where the consumer keeps what must survive it and what several instances share.
///
/// Keys are built by the caller: event and reload keys from [`super::dedupe`], window keys from
/// the sink name and app (and recipient), lease names from what they guard.
pub trait StateBackend: Send + Sync + 'static {
    /// Where the state lives, for logs (never a password).
    fn describe(&self) -> String;

    /// Whether other instances may share this state, so claims need leases that are renewed
    /// while an event is handled and taken over when they expire.
    fn shared(&self) -> bool;

    /// Takes `key` for `token` unless it is taken or done.
    fn claim<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, ClaimState>;

    /// Extends the claim; false when it is no longer `token`'s.
    fn renew<'a>(&'a self, key: &'a str, token: &'a str, lease: Duration) -> BoxFuture<'a, bool>;

    /// Marks `key` done and remembers the `also` keys, all for `retention`; returns what `key`
    /// held before (the claim's token, unless it was lost meanwhile).
    fn done<'a>(
        &'a self,
        key: &'a str,
        also: &'a [String],
        retention: Duration,
    ) -> BoxFuture<'a, Option<String>>;

    /// Gives up a claim without marking it done, so the next copy of the event (here or on
    /// another instance) is handled at once instead of after the lease.
    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, ()>;

    /// `done`, a claim token, or `None` when nobody holds the key.
    fn state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>>;

    /// Whether a key was remembered (by [`Self::done`]'s `also`).
    fn seen<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool>;

    /// Whether the rate-limit window of `sink` + `key` lets `holder` (the claim key: tenant +
    /// reload) send now; an open window is reserved for `holder`, so whoever holds the claim
    /// may use it and nobody else.
    fn window_open<'a>(&'a self, window: RateWindow<'a>) -> BoxFuture<'a, bool>;

    /// `holder`'s alert was delivered or is held durably: the window runs from now.
    fn window_used<'a>(&'a self, window: RateWindow<'a>) -> BoxFuture<'a, ()>;

    /// Takes or renews a named lease for `holder` (e.g. one parked alert being redelivered);
    /// false while another holder has it.
    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> BoxFuture<'a, bool>;

    /// Gives a lease back early.
    fn unlease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, ()>;

    /// Counts an alert in `destination`'s digest window (opened by the first alert, lasting
    /// `settings.window`) and, past `settings.after_alerts` alerts, keeps `entry` durably in the
    /// window's digest instead. With several instances the window is the group's.
    fn digest_fold<'a>(
        &'a self,
        destination: &'a str,
        settings: DigestSettings,
        entry: &'a str,
    ) -> BoxFuture<'a, Folding>;

    /// Digest windows whose time is up and that hold entries, oldest first.
    fn digests_due<'a>(&'a self) -> BoxFuture<'a, Vec<DueDigest>>;

    /// The entries of a digest window that is up, which no alert can join any more. Gives the
    /// same entries again until [`Self::digest_clear`], so an instance that dies before its
    /// digest is held durably leaves it to another.
    fn digest_entries<'a>(
        &'a self,
        destination: &'a str,
        window: &'a str,
    ) -> BoxFuture<'a, Vec<String>>;

    /// The window's digest is held durably for delivery: forget it.
    fn digest_clear<'a>(&'a self, destination: &'a str, window: &'a str) -> BoxFuture<'a, ()>;

    /// A small value kept for `retention`, shared by the group (the webhook watchdog's
    /// findings and where its last check ended).
    fn note<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>>;

    fn set_note<'a>(
        &'a self,
        key: &'a str,
        value: &'a str,
        retention: Duration,
    ) -> BoxFuture<'a, ()>;

    /// Events remembered locally, for the start-up log; `None` when the store is shared.
    fn remembered(&self) -> Option<usize> {
        None
    }

    /// The Redis store behind this backend, for health and metrics.
    fn redis(&self) -> Option<&RedisStore> {
        None
    }
}
