//! The shared store in Redis (or Valkey): every decision several consumer instances must agree
//! on is one atomic command or one short Lua script, through the `redis` crate's tokio
//! connection manager (it reconnects by itself).
//!
//! Keys, all under `qscloud-consumer:`:
//! - `event:<claim key>`: `claim:<token>` while an instance handles it (expires after the lease
//!   unless renewed), then `done` for the dedupe retention. The claim key is the reload's
//!   (`reload:<tenantId>/<reloadId>`) when the event names one, so a reload reported by both event
//!   types (two event ids) is handled once; else
//!   `<tenantId>/<eventId>`.
//! - `seen:<key>`: other dedupe keys, `1` for the retention.
//! - `rate:<sink>:<key>`: an open rate-limit window; it expires when the window closes.
//! - `digest-window:<destination>`, `digest-entries:<destination>`, `digests:due`: open digest
//!   windows, their folded alerts and the index of windows by closing time (`redis_backend.rs`);
//!   `lease:<name>`: who closes a due window.
//! - `epoch`: set once per store lifetime; seeing it change tells that the store forgot
//!   everything (a restart without persistence), which is logged and counted, never silent.
//!
//! The store being unreachable is never skipped over: [`RedisStore::retrying`] repeats an
//! operation with capped backoff until the store answers, so the MQTT message in hand stays
//! unacknowledged (the broker keeps it) and nothing is decided without the group.
//!
//! Not every failure is an outage that waiting cures, so failures are told apart
//! ([`FailureKind`]): a server that became a read-only replica after a failover gets a fresh
//! connection (a DNS name or proxy may lead elsewhere now), and while any operation is stuck
//! on a failure, [`RedisStore::failing`] says why, so `/healthz` answers 503 instead of
//! reporting a consumer that PINGs fine but handles nothing. [`RedisStore::check_server`]
//! refuses, at start, a server too old for the commands used here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

use crate::settings::RedisUrl;

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

/// What went wrong with a store operation, and so what helps: the `kind` label of
/// `qscloud_consumer_store_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No answer (refused, reset, timed out), or a server not ready yet (loading its data): the
    /// connection manager reconnects by itself, and waiting is the cure.
    Connection,
    /// `READONLY`: the server is a replica now (failover). The connection is replaced, because
    /// the old one stays with that host although the DNS name or proxy may lead to the new
    /// primary.
    ReadOnly,
    /// `OOM`: `maxmemory` reached with `noeviction`. Retried, since freeing memory cures it;
    /// the message stays unacknowledged, so nothing is lost meanwhile.
    Oom,
    /// A refusal no retry cures: a command or syntax the server lacks (older than 7.0), ACL
    /// permissions, a wrong password, foreign data under our keys. An operator must act.
    Other,
}

impl FailureKind {
    pub fn of(error: &RedisError) -> Self {
        match error.kind() {
            ErrorKind::Io | ErrorKind::Parse | ErrorKind::ClusterConnectionNotFound => {
                FailureKind::Connection
            }
            ErrorKind::Server(ServerErrorKind::ReadOnly) => FailureKind::ReadOnly,
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::TryAgain
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown,
            ) => FailureKind::Connection,
            // Errors raised inside a Lua script keep the server's code (`-OOM … script: …`).
            _ => match error.code() {
                Some("OOM") => FailureKind::Oom,
                Some("READONLY") => FailureKind::ReadOnly,
                Some("LOADING") => FailureKind::Connection,
                _ => FailureKind::Other,
            },
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Connection => "connection",
            FailureKind::ReadOnly => "readonly",
            FailureKind::Oom => "oom",
            FailureKind::Other => "other",
        }
    }

    /// What the failure means, for the log line and `/healthz`.
    fn meaning(self) -> &'static str {
        match self {
            FailureKind::Connection => "unreachable",
            FailureKind::ReadOnly => "a read-only replica (after a failover?)",
            FailureKind::Oom => "out of memory (maxmemory reached)",
            FailureKind::Other => "refusing the command",
        }
    }
}

/// The oldest Redis that has every command used here: `SET … NX GET` (rate-limit windows)
/// came with 7.0; older servers answer it with a syntax error.
pub const MIN_REDIS: (u32, u32) = (7, 0);

/// What [`RedisStore::check_server`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// `redis` or `valkey`.
    pub server: String,
    /// The server's own version: `valkey_version` for Valkey, `redis_version` otherwise.
    pub version: String,
    /// `redis_version`: for Valkey, the Redis release it is compatible with. `unknown` where
    /// `INFO` was refused (then `version` is too).
    pub redis_version: String,
    /// `maxmemory-policy`, or `None` where `CONFIG GET` is not allowed (managed Redis).
    pub maxmemory_policy: Option<String>,
}

impl ServerInfo {
    /// Whether the server may delete keys to make room. Every key written here expires, so
    /// `volatile-*` policies pick them as readily as `allkeys-*`: a dropped claim or dedupe key
    /// means a duplicate alert, a dropped window an alert the rate limit should have held.
    pub fn evicting(&self) -> bool {
        self.maxmemory_policy
            .as_deref()
            .is_some_and(|policy| policy != "noeviction")
    }
}

/// Why [`RedisStore::check_server`] did not accept the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerCheckError {
    /// No answer yet: not a reason to fail the start (the store is retried when used, and the
    /// consumer reports itself unhealthy meanwhile); check again once it answers.
    #[error(
        "state store {store} (Butler.qlikSenseCloud.consumer.stateStore) does not answer, its \
         version is not checked yet: {reason}"
    )]
    Unreachable { store: String, reason: String },
    /// Too old for the commands the consumer sends: it would refuse them at the first alert.
    #[error(
        "Butler.qlikSenseCloud.consumer.stateStore: {store} is {server} {version}; the consumer \
         needs Redis 7.0 or later (or Valkey), because its rate-limit windows use SET … NX GET"
    )]
    TooOld {
        store: String,
        server: String,
        version: String,
    },
    /// The server answered with a refusal: a wrong password or user, missing ACL rights.
    #[error(
        "state store {store} (Butler.qlikSenseCloud.consumer.stateStore) refused the start-up \
         check: {reason}"
    )]
    Refused { store: String, reason: String },
}

/// `major.minor` of a version such as `7.0.15`.
fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some((major, minor))
}

/// The `field:value` lines of an `INFO` answer.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// Operations stuck on a failure right now, and the latest reason: what `/healthz` reports.
#[derive(Debug, Default)]
struct Failing {
    operations: usize,
    reason: Option<String>,
}

/// Held by an operation from its first failure to its success (or its cancellation: dropped
/// with the future), so the count never outlives the operations it counts.
struct Stuck(Arc<Mutex<Failing>>);

impl Drop for Stuck {
    fn drop(&mut self) {
        let mut failing = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        failing.operations = failing.operations.saturating_sub(1);
        if failing.operations == 0 {
            failing.reason = None;
        }
    }
}

/// The connection in use, and a generation number so that many operations failing on the same
/// replica at once replace it once, not once each.
struct Current {
    conn: ConnectionManager,
    generation: u64,
}

#[derive(Clone)]
pub struct RedisStore {
    current: Arc<Mutex<Current>>,
    /// What a fresh connection is built from (behind an `Arc`: the store is cloned into every
    /// claim and rate limit, and both are large).
    connector: Arc<(redis::Client, ConnectionManagerConfig)>,
    display: String,
    connected: Arc<AtomicBool>,
    failing: Arc<Mutex<Failing>>,
    /// The store's epoch as last seen by this process.
    epoch: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisStore({})", self.display)
    }
}

/// A wrong password or user: the server answered, and will refuse every command until the
/// configuration changes.
fn is_authentication(error: &RedisError) -> bool {
    error.kind() == ErrorKind::AuthenticationFailed
        || matches!(error.code(), Some("WRONGPASS" | "NOAUTH"))
}

/// A server's refusal as `redis-cli` shows it (`READONLY You can't write…`), so the code an
/// operator searches for is there; other errors as the `redis` crate words them.
fn describe(error: &RedisError) -> String {
    match (error.code(), error.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => error.to_string(),
    }
}

pub(super) fn key(kind: &str, rest: &str) -> String {
    format!("{PREFIX}{kind}:{rest}")
}

pub(super) fn millis(d: Duration) -> u64 {
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
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
        Ok(Self {
            current: Arc::new(Mutex::new(Current {
                conn,
                generation: 0,
            })),
            connector: Arc::new((client, config)),
            display: url.to_string(),
            connected: Arc::new(AtomicBool::new(false)),
            failing: Arc::default(),
            epoch: Arc::default(),
        })
    }

    /// A connection for commands this module has no method for (tests, diagnostics).
    pub fn connection(&self) -> ConnectionManager {
        self.current().0
    }

    fn current(&self) -> (ConnectionManager, u64) {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        (current.conn.clone(), current.generation)
    }

    /// Replaces the connection that gave a failure, unless another operation already did.
    /// Operations still holding the old one finish on it; it closes with its last clone.
    fn reconnect(&self, failed_generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.generation != failed_generation {
            return;
        }
        let (client, config) = &*self.connector;
        match ConnectionManager::new_lazy_with_config(client.clone(), config.clone()) {
            Ok(conn) => {
                *current = Current {
                    conn,
                    generation: failed_generation.wrapping_add(1),
                };
            }
            Err(e) => {
                tracing::warn!(store = %self.display, "cannot build a new connection to the state store: {e}");
            }
        }
    }

    /// Why store operations fail now: the latest failure's reason while at least one operation
    /// is stuck retrying (a write refused for lack of memory, a read-only replica, a command
    /// the server lacks, or no answer); `None` when none is. `/healthz` answers 503 with it.
    /// The text comes from the server's error, never from the URL: it holds no password.
    pub fn failing(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.operations > 0 {
            failing.reason.clone()
        } else {
            None
        }
    }

    fn stuck(&self) -> Stuck {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.operations = failing.operations.saturating_add(1);
        Stuck(Arc::clone(&self.failing))
    }

    fn note_failure(&self, what: &str, kind: FailureKind, error: &RedisError) {
        let mut failing = self.failing.lock().unwrap_or_else(PoisonError::into_inner);
        failing.reason = Some(format!(
            "{what} failed: the store is {}: {}",
            kind.meaning(),
            describe(error)
        ));
    }

    /// Counts a failure and, for a replica, replaces the connection; a server that refuses
    /// still answers, so only a connection failure counts as disconnected.
    fn failed(&self, kind: FailureKind, generation: u64) {
        crate::metrics::global().store_error(kind.label());
        self.set_connected(kind != FailureKind::Connection);
        if kind == FailureKind::ReadOnly {
            self.reconnect(generation);
        }
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
        let mut conn = self.connection();
        let ok = matches!(
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut conn))
                .await,
            Ok(Ok(_))
        );
        self.connected.store(ok, Ordering::Relaxed);
        crate::metrics::global().set_store_connected(ok);
        ok
    }

    /// Reads the server's version and eviction policy; to call at start. Refuses a Redis older
    /// than 7.0 ([`ServerCheckError::TooOld`]); accepts Valkey (compatible with Redis 7.2).
    /// Logs a warning itself when the server may evict keys ([`ServerInfo::evicting`]). A
    /// server that does not answer within a few seconds is [`ServerCheckError::Unreachable`]:
    /// log it and call again later rather than failing the start. A server that forbids
    /// `INFO` (a restricted ACL, a proxy) is accepted with a warning that the version was not
    /// checked; one that forbids `CONFIG GET` leaves the policy unknown, quietly.
    pub async fn check_server(&self) -> Result<ServerInfo, ServerCheckError> {
        let mut conn = self.connection();
        let store = self.display.clone();
        let info = tokio::time::timeout(
            Duration::from_secs(5),
            redis::cmd("INFO")
                .arg("server")
                .query_async::<String>(&mut conn),
        )
        .await;
        let info = match info {
            Err(_) => {
                return Err(ServerCheckError::Unreachable {
                    store,
                    reason: "no answer within 5 s".into(),
                });
            }
            Ok(Ok(info)) => Some(info),
            Ok(Err(e)) => match FailureKind::of(&e) {
                FailureKind::Connection => {
                    return Err(ServerCheckError::Unreachable {
                        store,
                        reason: describe(&e),
                    });
                }
                _ if is_authentication(&e) => {
                    return Err(ServerCheckError::Refused {
                        store,
                        reason: describe(&e),
                    });
                }
                _ => {
                    tracing::warn!(
                        store = %store,
                        "cannot read the state store's version (INFO server: {}); it is not \
                         checked: the consumer needs Redis 7.0 or later, or Valkey",
                        describe(&e)
                    );
                    None
                }
            },
        };
        let field = |name: &str| {
            info.as_deref()
                .and_then(|info| info_field(info, name))
                .map(str::to_owned)
        };
        let redis_version = field("redis_version").unwrap_or_else(|| "unknown".into());
        let valkey_version = field("valkey_version");
        let valkey = valkey_version.is_some()
            || field("server_name").is_some_and(|name| name.eq_ignore_ascii_case("valkey"));
        let server = if valkey { "valkey" } else { "redis" };
        match major_minor(&redis_version) {
            Some(found) if found < MIN_REDIS && !valkey => {
                return Err(ServerCheckError::TooOld {
                    store,
                    server: "Redis".into(),
                    version: redis_version,
                });
            }
            // Said above already when INFO was refused.
            None if info.is_some() && !valkey => tracing::warn!(
                store = %store,
                "the state store's INFO names no version the consumer understands \
                 (redis_version: {redis_version}); it is not checked: the consumer needs Redis \
                 7.0 or later, or Valkey"
            ),
            _ => {}
        }
        let policy = self.maxmemory_policy(&mut conn).await;
        let found = ServerInfo {
            server: server.to_owned(),
            version: valkey_version.unwrap_or_else(|| redis_version.clone()),
            redis_version,
            maxmemory_policy: policy,
        };
        if found.evicting() {
            tracing::warn!(
                store = %store,
                policy = found.maxmemory_policy.as_deref().unwrap_or_default(),
                "the state store may evict keys when full (maxmemory-policy is not noeviction): \
                 an evicted claim or dedupe key lets an event be alerted twice, an evicted \
                 rate-limit window lets alerts through. Set maxmemory-policy noeviction: a full \
                 store then refuses writes, which the consumer reports (/healthz 503) and retries"
            );
        }
        Ok(found)
    }

    /// `maxmemory-policy`; `None`, quietly, where `CONFIG` is disabled or forbidden.
    async fn maxmemory_policy(&self, conn: &mut ConnectionManager) -> Option<String> {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            redis::cmd("CONFIG")
                .arg("GET")
                .arg("maxmemory-policy")
                .query_async::<std::collections::HashMap<String, String>>(conn),
        )
        .await;
        match answer {
            Ok(Ok(mut config)) => config.remove("maxmemory-policy"),
            Ok(Err(e)) => {
                tracing::debug!(store = %self.display, "CONFIG GET maxmemory-policy refused: {e}");
                None
            }
            Err(_) => None,
        }
    }

    /// Runs `op` until the store answers, each failure counted by [`FailureKind`]; a read-only
    /// replica gets a fresh connection first. Meanwhile [`RedisStore::failing`] says why.
    /// Failures are logged at the first try, every tenth and when their kind changes, with the
    /// reason (never the URL's password: the error text of the `redis` crate does not carry
    /// it, and we log our masked URL).
    pub async fn retrying<T, F, Fut>(&self, what: &str, op: F) -> T
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let mut failures = 0u32;
        let mut delay = Duration::from_millis(100);
        let mut stuck: Option<Stuck> = None;
        let mut last_kind = None;
        loop {
            let (conn, generation) = self.current();
            match op(conn).await {
                Ok(value) => {
                    if failures > 0 {
                        tracing::info!(store = %self.display, "state store answers again after {failures} failed tries ({what})");
                    }
                    self.set_connected(true);
                    drop(stuck);
                    return value;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let kind = FailureKind::of(&e);
                    self.failed(kind, generation);
                    stuck.get_or_insert_with(|| self.stuck());
                    self.note_failure(what, kind, &e);
                    if failures == 1 || failures.is_multiple_of(10) || last_kind != Some(kind) {
                        self.log_failure(what, kind, &e, failures, delay);
                    }
                    last_kind = Some(kind);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn log_failure(
        &self,
        what: &str,
        kind: FailureKind,
        e: &RedisError,
        failures: u32,
        delay: Duration,
    ) {
        let store = &self.display;
        let e = describe(e);
        match kind {
            FailureKind::Connection => tracing::error!(
                store = %store,
                failures,
                "state store unreachable ({what}): {e}; the message stays unacknowledged, retrying in {delay:?}"
            ),
            FailureKind::ReadOnly => tracing::error!(
                store = %store,
                failures,
                "state store is a read-only replica ({what}): {e}; a failover demoted it, or the \
                 URL names a replica. Reconnecting (the name may lead to the new primary now) \
                 and retrying in {delay:?}; the message stays unacknowledged"
            ),
            FailureKind::Oom => tracing::error!(
                store = %store,
                failures,
                "state store is out of memory ({what}): {e}; nothing is lost (the message stays \
                 unacknowledged), retrying in {delay:?}. Free memory or raise maxmemory; \
                 /healthz answers 503 meanwhile"
            ),
            FailureKind::Other => tracing::error!(
                store = %store,
                failures,
                "state store refused {what}: {e}; retrying cannot cure this: the server must \
                 change (Redis 7.0 or later or Valkey, ACL rights for the consumer's commands, \
                 nothing else writing under {PREFIX}). The message stays unacknowledged, \
                 retrying in {delay:?}; /healthz answers 503 meanwhile"
            ),
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
        let (mut conn, generation) = self.current();
        let result: RedisResult<i64> = Script::new(RENEW)
            .key(key("event", event))
            .arg(token)
            .arg(millis(lease))
            .invoke_async(&mut conn)
            .await;
        match result {
            Ok(n) => n == 1,
            Err(e) => {
                self.failed(FailureKind::of(&e), generation);
                true
            }
        }
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

    /// Deletes `k` if it still holds `token` (a claim, a lease); an error is logged and counted
    /// (the key expires by itself).
    pub(super) async fn release_key(&self, k: &str, token: &str) {
        let (mut conn, generation) = self.current();
        let result: RedisResult<i64> = Script::new(RELEASE)
            .key(k)
            .arg(token)
            .invoke_async(&mut conn)
            .await;
        if let Err(e) = result {
            self.failed(FailureKind::of(&e), generation);
            tracing::warn!(store = %self.display, "cannot release {k} (it expires by itself): {e}");
        }
    }
}

/// Faults a shared Redis cannot be put into (CONFIG SET, REPLICAOF), on throwaway servers of
/// the tests' own; skipped, with a message, where `redis-server` cannot be started.
#[cfg(test)]
mod fault_tests {
    use std::process::Stdio;
    use std::time::Instant;

    use axum::http::StatusCode;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    use super::*;
    use crate::metrics::global;
    use crate::metrics_server::health_of;
    use crate::settings::StateStoreConfig;

    const WAIT: Duration = Duration::from_secs(10);

    fn store_at(url: &str) -> RedisStore {
        let env = |_: &str| None;
        let yaml: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&format!("stateStore: '{url}'")).expect("yaml");
        let node = crate::settings::Node::root("c", Some(&yaml));
        let mut problems = crate::settings::Problems::default();
        let ha = crate::settings::parse_ha_for_tests(&node, &env, &mut problems);
        let StateStoreConfig::Redis(url) = ha.state_store else {
            panic!("not a Redis URL")
        };
        RedisStore::open(&url).expect("client")
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port")
    }

    /// Polls `check` until it holds; fails the test, naming `what`, after [`WAIT`].
    async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !check().await {
            assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A redis-server of the test's own, killed when dropped.
    struct Throwaway {
        port: u16,
        _child: tokio::process::Child,
    }

    impl Throwaway {
        async fn start(extra: &[&str]) -> Option<Throwaway> {
            let port = free_port();
            let spawned = tokio::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .args(extra)
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn();
            let Ok(mut child) = spawned else {
                eprintln!(
                    "SKIPPED: cannot start redis-server (install it: apt-get install redis-server)"
                );
                return None;
            };
            let stdout = child.stdout.take().expect("piped stdout");
            let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
            // Reads the log to its end, so a chatty server never blocks on a full pipe.
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                let mut ready = Some(ready_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("Ready to accept connections")
                        && let Some(ready) = ready.take()
                    {
                        let _ = ready.send(());
                    }
                }
            });
            tokio::time::timeout(WAIT, ready_rx)
                .await
                .expect("redis-server ready within 10 s")
                .expect("redis-server started");
            Some(Throwaway {
                port,
                _child: child,
            })
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}/0", self.port)
        }

        async fn admin(&self) -> redis::aio::MultiplexedConnection {
            redis::Client::open(self.url())
                .expect("admin client")
                .get_multiplexed_async_connection()
                .await
                .expect("admin connection")
        }
    }

    async fn config_set(admin: &mut redis::aio::MultiplexedConnection, name: &str, value: &str) {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .query_async::<()>(admin)
            .await
            .expect("CONFIG SET");
    }

    async fn connections_received(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(admin)
            .await
            .expect("INFO stats");
        info_field(&info, "total_connections_received")
            .and_then(|n| n.parse().ok())
            .expect("total_connections_received")
    }

    #[test]
    fn failures_are_told_apart() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(FailureKind::of(&io), FailureKind::Connection);
        let oom = redis::make_extension_error(
            "OOM".into(),
            Some("command not allowed when used memory > 'maxmemory'.".into()),
        );
        assert_eq!(FailureKind::of(&oom), FailureKind::Oom);
        let syntax = redis::make_extension_error("ERR".into(), Some("syntax error".into()));
        assert_eq!(FailureKind::of(&syntax), FailureKind::Other);
        let noperm = redis::make_extension_error("NOPERM".into(), None);
        assert_eq!(FailureKind::of(&noperm), FailureKind::Other);
        assert_eq!(major_minor("7.0.15"), Some((7, 0)));
        assert_eq!(major_minor("6.2.0"), Some((6, 2)));
        assert_eq!(major_minor("8"), Some((8, 0)));
        assert_eq!(major_minor("unknown"), None);
    }

    #[tokio::test]
    async fn out_of_memory_answers_503_and_the_write_completes_once_memory_is_freed() {
        let Some(server) = Throwaway::start(&[]).await else {
            return;
        };
        let store = store_at(&server.url());
        let mut admin = server.admin().await;
        let oom_before = global().store_errors_count("oom");
        config_set(&mut admin, "maxmemory", "1").await;

        let claiming = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .claim("t/oom-event", "token-oom", Duration::from_secs(30))
                    .await
            }
        });
        until("the refused claim is reported by failing()", async || {
            store.failing().is_some()
        })
        .await;
        let reason = store.failing().unwrap_or_default();
        assert!(
            reason.contains("out of memory") && reason.contains("OOM"),
            "{reason}"
        );
        assert!(global().store_errors_count("oom") > oom_before);
        assert!(store.connected(), "a store refusing writes still answers");
        let (status, body) = health_of(true, Some(&store)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["store"], "failing", "{body}");
        assert!(
            body["reason"].as_str().unwrap_or("").contains("OOM"),
            "{body}"
        );
        assert!(!claiming.is_finished(), "the claim waits for the store");

        config_set(&mut admin, "maxmemory", "0").await;
        let claimed = tokio::time::timeout(WAIT, claiming)
            .await
            .expect("the claim completes within 10 s of memory being freed")
            .expect("claim task");
        assert_eq!(claimed, ClaimState::Mine);
        assert_eq!(store.failing(), None);
        let (status, body) = health_of(true, Some(&store)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    #[tokio::test]
    async fn a_demoted_primary_gets_a_new_connection_and_the_write_completes_once_promoted() {
        let Some(server) = Throwaway::start(&[]).await else {
            return;
        };
        let store = store_at(&server.url());
        let mut admin = server.admin().await;
        store.remember("t/before", Duration::from_secs(60)).await;
        let connections_before = connections_received(&mut admin).await;
        let readonly_before = global().store_errors_count("readonly");

        // A replica of a primary that does not exist stays read-only and keeps its data.
        let nowhere = free_port().to_string();
        redis::cmd("REPLICAOF")
            .arg("127.0.0.1")
            .arg(&nowhere)
            .query_async::<()>(&mut admin)
            .await
            .expect("REPLICAOF");
        let writing = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .remember("t/after-failover", Duration::from_secs(60))
                    .await;
            }
        });
        until("the write is refused as READONLY", async || {
            global().store_errors_count("readonly") > readonly_before
        })
        .await;
        until(
            "a new connection reaches the server after READONLY",
            async || connections_received(&mut admin).await > connections_before,
        )
        .await;
        let reason = store.failing().unwrap_or_default();
        assert!(reason.contains("READONLY"), "{reason}");
        let (status, _) = health_of(true, Some(&store)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async::<()>(&mut admin)
            .await
            .expect("REPLICAOF NO ONE");
        tokio::time::timeout(WAIT, writing)
            .await
            .expect("the write completes within 10 s of the server taking writes again")
            .expect("write task");
        let written: bool = admin
            .exists(key("seen", "t/after-failover"))
            .await
            .expect("EXISTS");
        assert!(written);
        assert_eq!(store.failing(), None);
    }

    #[tokio::test]
    async fn a_refusal_no_retry_cures_is_reported_until_the_operator_acts() {
        let Some(server) = Throwaway::start(&[]).await else {
            return;
        };
        let store = store_at(&server.url());
        let mut admin = server.admin().await;
        let other_before = global().store_errors_count("other");
        // Something else wrote a hash where the consumer keeps a string.
        let foreign = key("event", "t/foreign");
        admin
            .hset::<_, _, _, ()>(&foreign, "f", "v")
            .await
            .expect("HSET");
        let reading = tokio::spawn({
            let store = store.clone();
            async move { store.state("t/foreign").await }
        });
        until("the refused read is reported by failing()", async || {
            store.failing().is_some()
        })
        .await;
        let reason = store.failing().unwrap_or_default();
        assert!(reason.contains("WRONGTYPE"), "{reason}");
        assert!(global().store_errors_count("other") > other_before);
        let (status, _) = health_of(true, Some(&store)).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

        admin.del::<_, ()>(&foreign).await.expect("DEL");
        let found = tokio::time::timeout(WAIT, reading)
            .await
            .expect("the read completes within 10 s of the key being fixed")
            .expect("read task");
        assert_eq!(found, None);
        assert_eq!(store.failing(), None);
    }

    /// Speaks just enough RESP for a client to connect and read `INFO server` and
    /// `CONFIG GET maxmemory-policy`; everything else (AUTH, CLIENT SETINFO) is `+OK`.
    async fn fake_redis(info: &'static str, policy: &'static str) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (read, mut write) = socket.into_split();
                    let mut read = BufReader::new(read);
                    while let Some(command) = read_command(&mut read).await {
                        let reply = match command.first().map(|c| c.to_ascii_uppercase()) {
                            Some(c) if c == "INFO" => format!("${}\r\n{info}\r\n", info.len()),
                            Some(c) if c == "CONFIG" => format!(
                                "*2\r\n$16\r\nmaxmemory-policy\r\n${}\r\n{policy}\r\n",
                                policy.len()
                            ),
                            _ => "+OK\r\n".to_owned(),
                        };
                        if write.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        port
    }

    async fn read_command(
        read: &mut BufReader<tokio::net::tcp::OwnedReadHalf>,
    ) -> Option<Vec<String>> {
        let mut line = String::new();
        read.read_line(&mut line).await.ok()?;
        let count: usize = line.trim().strip_prefix('*')?.parse().ok()?;
        let mut args = Vec::with_capacity(count);
        for _ in 0..count {
            line.clear();
            read.read_line(&mut line).await.ok()?;
            let len: usize = line.trim().strip_prefix('$')?.parse().ok()?;
            let mut arg = vec![0; len + 2];
            read.read_exact(&mut arg).await.ok()?;
            arg.truncate(len);
            args.push(String::from_utf8(arg).ok()?);
        }
        Some(args)
    }

    #[tokio::test]
    async fn the_version_check_refuses_redis_6_2_and_accepts_7_and_valkey() {
        let old = fake_redis(
            "# Server\r\nredis_version:6.2.0\r\nredis_mode:standalone",
            "noeviction",
        )
        .await;
        let store = store_at(&format!("redis://:pw-fake-xyz@127.0.0.1:{old}/0"));
        let refused = store.check_server().await.expect_err("6.2 is refused");
        let text = refused.to_string();
        assert!(
            matches!(&refused, ServerCheckError::TooOld { version, .. } if version == "6.2.0"),
            "{text}"
        );
        assert!(
            text.contains("Butler.qlikSenseCloud.consumer.stateStore")
                && text.contains("6.2.0")
                && text.contains("7.0"),
            "{text}"
        );
        assert!(!text.contains("pw-fake-xyz"), "{text}");

        let valkey = fake_redis(
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1",
            "allkeys-lru",
        )
        .await;
        let found = store_at(&format!("redis://127.0.0.1:{valkey}/0"))
            .check_server()
            .await
            .expect("Valkey is accepted");
        assert_eq!(found.server, "valkey");
        assert_eq!(found.version, "8.0.1");
        assert!(found.evicting(), "allkeys-lru evicts");

        let Some(server) = Throwaway::start(&[]).await else {
            return;
        };
        let store = store_at(&server.url());
        let found = store.check_server().await.expect("the real Redis passes");
        assert_eq!(found.server, "redis");
        assert!(major_minor(&found.version).is_some_and(|v| v >= MIN_REDIS));
        assert_eq!(found.maxmemory_policy.as_deref(), Some("noeviction"));
        assert!(!found.evicting());
        let mut admin = server.admin().await;
        // Every key the consumer writes expires, so volatile-* policies evict them too.
        config_set(&mut admin, "maxmemory-policy", "volatile-lru").await;
        assert!(store.check_server().await.expect("checked").evicting());
    }

    #[tokio::test]
    async fn the_version_check_tells_an_unreachable_store_from_a_refusing_one() {
        let nowhere = free_port();
        let unreachable = store_at(&format!("redis://:pw-gone-xyz@127.0.0.1:{nowhere}/0"))
            .check_server()
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(unreachable, ServerCheckError::Unreachable { .. }),
            "{unreachable:?}"
        );
        assert!(!unreachable.to_string().contains("pw-gone-xyz"));

        let Some(server) = Throwaway::start(&["--requirepass", "right-pw-abc"]).await else {
            return;
        };
        let wrong = format!("redis://:wrong-pw-xyz@127.0.0.1:{}/0", server.port);
        let refused = store_at(&wrong)
            .check_server()
            .await
            .expect_err("wrong password");
        let text = refused.to_string();
        assert!(
            matches!(refused, ServerCheckError::Refused { .. }),
            "{text}"
        );
        assert!(
            !text.contains("wrong-pw-xyz") && !text.contains("right-pw-abc"),
            "{text}"
        );
    }
}
