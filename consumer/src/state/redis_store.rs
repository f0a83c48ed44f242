//! The shared store in Redis (or Valkey): every decision several consumer instances must agree
//! on is one atomic command or one short Lua script, through the `redis` crate's tokio
//! connection manager (it reconnects by itself).
//!
//! Keys, all under `qscloud-consumer:`:
//! - `event:<tenantId>/<eventId>`: `claim:<token>` while an instance handles the event (expires
//!   after the lease unless renewed), then `done` for the dedupe retention.
//! - `seen:<key>`: other dedupe keys (e.g. tenant + reload id), `1` for the retention.
//! - `rate:<sink>:<key>`: an open rate-limit window; it expires when the window closes.
//! - `epoch`: set once per store lifetime; seeing it change tells that the store forgot
//!   everything (a restart without persistence), which is logged and counted, never silent.
//!
//! The store being unreachable is never skipped over: [`RedisStore::retrying`] repeats an
//! operation with capped backoff until the store answers, so the MQTT message in hand stays
//! unacknowledged (the broker keeps it) and nothing is decided without the group.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, RedisResult, Script, Value};

use crate::config::RedisUrl;

const PREFIX: &str = "qscloud-consumer:";
const DONE: &str = "done";

/// Set the claim if free; else return who holds it (or `done`). Also returns the store's epoch,
/// a random value set by whoever first finds none: a different epoch than last time means the
/// store lost its memory (restarted without persistence, flushed). One round trip, atomic.
const CLAIM: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then redis.call('SET', KEYS[2], ARGV[3]); epoch = ARGV[3] end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return {'mine', epoch} end
return {redis.call('GET', KEYS[1]) or '', epoch}";
/// Extend the lease only while the claim is still this instance's.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0";
/// Mark done whoever held it, and say what was there (to detect a claim lost meanwhile).
const DONE_SCRIPT: &str = r"
local previous = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], 'done', 'PX', ARGV[1])
return previous";
/// Delete only what is still this instance's.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// What the store says about an event key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimState {
    /// This instance now holds it.
    Mine,
    /// Handled (delivered or parked) by some instance.
    Done,
    /// Another instance holds it (the value names the holder's token).
    HeldElsewhere(String),
}

#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    display: String,
    connected: Arc<AtomicBool>,
    /// The store's epoch as last seen by this process.
    epoch: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisStore({})", self.display)
    }
}

fn key(kind: &str, rest: &str) -> String {
    format!("{PREFIX}{kind}:{rest}")
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    /// Builds the client without connecting: a consumer starts (and reports itself unhealthy)
    /// while Redis is down, rather than failing its start.
    pub fn open(url: &RedisUrl) -> RedisResult<Self> {
        let client = redis::Client::open(url.expose())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        Ok(Self {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            display: url.to_string(),
            connected: Arc::new(AtomicBool::new(false)),
            epoch: Arc::default(),
        })
    }

    /// A connection for commands this module has no method for (tests, diagnostics).
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The URL with its password masked.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Whether the last operation reached the store.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// One PING, bounded by `timeout`; updates [`RedisStore::connected`].
    pub async fn ping(&self, timeout: Duration) -> bool {
        let mut conn = self.conn.clone();
        let ok = matches!(
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn))
                .await,
            Ok(Ok(_))
        );
        self.connected.store(ok, Ordering::Relaxed);
        crate::metrics::global().set_store_connected(ok);
        ok
    }

    /// Runs `op` until the store answers. Failures are logged at the first try and every tenth,
    /// with the reason (never the URL's password: the error text of the `redis` crate does not
    /// carry it, and we log our masked URL).
    pub async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> T
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let mut failures = 0u32;
        let mut delay = Duration::from_millis(100);
        loop {
            match op(self.conn.clone()).await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(store = %self.display, "state store reachable again after {failures} failed tries ({what})");
                    }
                    self.set_connected(true);
                    return value;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    self.set_connected(false);
                    if failures == 1 || failures.is_multiple_of(10) {
                        tracing::error!(
                            store = %self.display,
                            failures,
                            "state store unreachable ({what}): {e}; the message stays unacknowledged, retrying in {delay:?}"
                        );
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn set_connected(&self, ok: bool) {
        if self.connected.swap(ok, Ordering::Relaxed) != ok {
            crate::metrics::global().set_store_connected(ok);
        }
    }

    pub async fn claim(&self, event: &str, token: &str, lease: Duration) -> ClaimState {
        let k = key("event", event);
        let fresh_epoch = format!("{}-{}", std::process::id(), crate::state::now_nanos());
        let (value, epoch): (String, String) = self
            .retrying("claim", |mut conn| {
                let k = k.clone();
                let fresh_epoch = fresh_epoch.clone();
                async move {
                    Script::new(CLAIM)
                        .key(k)
                        .key(key("epoch", ""))
                        .arg(token)
                        .arg(millis(lease))
                        .arg(fresh_epoch)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await;
        self.check_epoch(epoch);
        match value.as_str() {
            "mine" => ClaimState::Mine,
            DONE => ClaimState::Done,
            other => ClaimState::HeldElsewhere(other.to_owned()),
        }
    }

    /// Logs and counts a store that forgot everything since this process last asked.
    fn check_epoch(&self, epoch: String) {
        let Ok(mut known) = self.epoch.lock() else {
            return;
        };
        if known.as_ref().is_some_and(|k| *k != epoch) {
            crate::metrics::global().store_reset();
            tracing::error!(
                store = %self.display,
                "state store lost its memory (restarted without persistence, or flushed): events \
                 the group handled before may be alerted again, and rate-limit windows reopened. \
                 Run Redis with persistence (appendonly yes) to avoid this"
            );
        }
        *known = Some(epoch);
    }

    /// Extends the lease; false when the claim is no longer this instance's. A store error
    /// counts as "still mine" — the next renewal asks again.
    pub async fn renew(&self, event: &str, token: &str, lease: Duration) -> bool {
        let mut conn = self.conn.clone();
        let result: RedisResult<i64> = Script::new(RENEW)
            .key(key("event", event))
            .arg(token)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await;
        result.map(|n| n == 1).unwrap_or(true)
    }

    /// Marks the event done for `retention`; returns what the key held before (this claim's
    /// token, unless the claim was lost meanwhile).
    pub async fn done(&self, event: &str, retention: Duration) -> Option<String> {
        let k = key("event", event);
        self.retrying("mark done", |mut conn| {
            let k = k.clone();
            async move {
                Script::new(DONE_SCRIPT)
                    .key(k)
                    .arg(millis(retention))
                    .invoke_async(&mut conn)
                    .await
            }
        })
        .await
    }

    /// Gives up a claim without marking it done, so another instance can take the event now.
    pub async fn release(&self, event: &str, token: &str) {
        self.release_key(&key("event", event), token).await;
    }

    /// Whether an event key is marked done, or was claimed at all (used while waiting).
    pub async fn state(&self, event: &str) -> Option<String> {
        let k = key("event", event);
        self.retrying("read claim", |mut conn| {
            let k = k.clone();
            async move { conn.get(k).await }
        })
        .await
    }

    /// Other dedupe keys: whether seen, and remembering one.
    pub async fn seen(&self, what: &str) -> bool {
        let k = key("seen", what);
        self.retrying("dedupe lookup", |mut conn| {
            let k = k.clone();
            async move { conn.exists(k).await }
        })
        .await
    }

    pub async fn remember(&self, what: &str, retention: Duration) {
        let k = key("seen", what);
        self.retrying("dedupe remember", |mut conn| {
            let k = k.clone();
            async move { conn.pset_ex::<_, _, ()>(k, 1, millis(retention)).await }
        })
        .await;
    }

    /// Whether the group's rate-limit window of `sink` + `rate_key` lets the alert `holder`
    /// (tenant + event id) go now. An open window is reserved for that alert (SET NX, for the
    /// window's length), so no other alert of the app passes meanwhile on any instance. A
    /// reservation is not a sent alert: if its instance dies before delivering, the instance
    /// that takes the event over presents the same `holder` and may go; any other alert is
    /// held back, as the window will be used.
    pub async fn window_open(
        &self,
        sink: &str,
        rate_key: &str,
        window: Duration,
        holder: &str,
    ) -> bool {
        let k = key("rate", &format!("{sink}:{rate_key}"));
        let reservation = format!("pending:{holder}");
        let current: Value = self
            .retrying("rate limit", |mut conn| {
                let (k, reservation) = (k.clone(), reservation.clone());
                async move {
                    redis::cmd("SET")
                        .arg(k)
                        .arg(reservation)
                        .arg("NX")
                        .arg("GET")
                        .arg("PX")
                        .arg(millis(window))
                        .query_async(&mut conn)
                        .await
                }
            })
            .await;
        match current {
            // Nothing was there: reserved now.
            Value::Nil => true,
            other => redis::from_redis_value::<String>(other).is_ok_and(|v| v == reservation),
        }
    }

    /// The alert `holder` was delivered or parked: the window of `sink` + `rate_key` now runs
    /// its full length from here.
    pub async fn window_used(&self, sink: &str, rate_key: &str, window: Duration, holder: &str) {
        let k = key("rate", &format!("{sink}:{rate_key}"));
        let used = format!("sent:{holder}");
        self.retrying("rate limit", |mut conn| {
            let (k, used) = (k.clone(), used.clone());
            async move {
                redis::cmd("SET")
                    .arg(k)
                    .arg(used)
                    .arg("PX")
                    .arg(millis(window))
                    .query_async::<()>(&mut conn)
                    .await
            }
        })
        .await;
    }

    async fn release_key(&self, k: &str, token: &str) {
        let mut conn = self.conn.clone();
        let result: RedisResult<i64> = Script::new(RELEASE)
            .key(k)
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = result {
            tracing::warn!(store = %self.display, "cannot release {k} (it expires by itself): {e}");
        }
    }
}
