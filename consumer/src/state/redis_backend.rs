//! [`StateBackend`] over [`RedisStore`]: each decision is the store's atomic command or script.

use std::time::Duration;

use redis::Script;

use super::backend::{BoxFuture, ClaimState, DueDigest, Folding, RateWindow, StateBackend};
use super::redis_store::{RedisStore, key, millis};
use crate::digest::DigestSettings;

/// Take the lease if free or already this holder's (then extend it).
const LEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); return 1 end
if current == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1 end
return 0";

/// Counts an alert in the destination's window (by the server's clock, so every instance
/// agrees when a window ends) and folds it past `after`. KEYS: window hash, due set, entries
/// prefix. ARGV: window ms, after, entry, destination.
const DIGEST_FOLD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local w = redis.call('HMGET', KEYS[1], 'id', 'start', 'end')
local id, start, finish = w[1], tonumber(w[2]), tonumber(w[3])
if (not id) or now >= finish then
  id = tostring(now); start = now; finish = now + tonumber(ARGV[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'id', id, 'start', start, 'end', finish, 'count', 0)
end
local count = redis.call('HINCRBY', KEYS[1], 'count', 1)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]) + 3600000)
if count <= tonumber(ARGV[2]) then return {0, id} end
local entries = KEYS[3] .. id
redis.call('RPUSH', entries, ARGV[3])
redis.call('PEXPIRE', entries, 604800000)
redis.call('ZADD', KEYS[2], 'NX', finish, cjson.encode({ARGV[4], id, start, finish}))
return {1, id}";

/// Windows that are up: members of the due set with a score (end) before the server's now.
const DIGESTS_DUE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 100)";

/// Closes the window if it is still the destination's current one, then gives its entries.
/// KEYS: window hash, entries. ARGV: id.
const DIGEST_ENTRIES: &str = r"
if redis.call('HGET', KEYS[1], 'id') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return redis.call('LRANGE', KEYS[2], 0, -1)";

fn digest_keys(destination: &str) -> (String, String, String) {
    (
        key("digest-window", destination),
        key("digests", "due"),
        key("digest-entries", &format!("{destination}\n")),
    )
}

impl StateBackend for RedisStore {
    fn describe(&self) -> String {
        self.display().to_owned()
    }

    fn shared(&self) -> bool {
        true
    }

    fn claim<'a>(
        &'a self,
        key: &'a str,
        token: &'a str,
        lease: Duration,
    ) -> BoxFuture<'a, ClaimState> {
        Box::pin(RedisStore::claim(self, key, token, lease))
    }

    fn renew<'a>(&'a self, key: &'a str, token: &'a str, lease: Duration) -> BoxFuture<'a, bool> {
        Box::pin(RedisStore::renew(self, key, token, lease))
    }

    fn done<'a>(
        &'a self,
        key: &'a str,
        also: &'a [String],
        retention: Duration,
    ) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            for other in also {
                self.remember(other, retention).await;
            }
            RedisStore::done(self, key, retention).await
        })
    }

    fn release<'a>(&'a self, key: &'a str, token: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(RedisStore::release(self, key, token))
    }

    fn state<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(RedisStore::state(self, key))
    }

    fn seen<'a>(&'a self, key: &'a str) -> BoxFuture<'a, bool> {
        Box::pin(RedisStore::seen(self, key))
    }

    fn window_open<'a>(&'a self, w: RateWindow<'a>) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            w.length.is_zero()
                || RedisStore::window_open(self, w.sink, w.key, w.length, w.holder).await
        })
    }

    fn window_used<'a>(&'a self, w: RateWindow<'a>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !w.length.is_zero() {
                RedisStore::window_used(self, w.sink, w.key, w.length, w.holder).await;
            }
        })
    }

    fn lease<'a>(&'a self, name: &'a str, holder: &'a str, ttl: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let k = key("lease", name);
            let taken: i64 = self
                .retrying("lease", |mut conn| {
                    let k = k.clone();
                    async move {
                        Script::new(LEASE)
                            .key(k)
                            .arg(holder)
                            .arg(millis(ttl))
                            .invoke_async(&mut conn)
                            .await
                    }
                })
                .await;
            taken == 1
        })
    }

    fn unlease<'a>(&'a self, name: &'a str, holder: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.release_key(&key("lease", name), holder).await })
    }

    fn digest_fold<'a>(
        &'a self,
        destination: &'a str,
        settings: DigestSettings,
        entry: &'a str,
    ) -> BoxFuture<'a, Folding> {
        Box::pin(async move {
            let (window, due, entries) = digest_keys(destination);
            let (folded, id): (i64, String) = self
                .retrying("digest fold", |mut conn| {
                    let (window, due, entries) = (window.clone(), due.clone(), entries.clone());
                    async move {
                        Script::new(DIGEST_FOLD)
                            .key(window)
                            .key(due)
                            .key(entries)
                            .arg(millis(settings.window))
                            .arg(settings.after_alerts)
                            .arg(entry)
                            .arg(destination)
                            .invoke_async(&mut conn)
                            .await
                    }
                })
                .await;
            if folded == 1 {
                Folding::Folded { window: id }
            } else {
                Folding::Single
            }
        })
    }

    fn digests_due<'a>(&'a self) -> BoxFuture<'a, Vec<DueDigest>> {
        Box::pin(async move {
            let (_, due, _) = digest_keys("");
            let members: Vec<String> = self
                .retrying("digests due", |mut conn| {
                    let due = due.clone();
                    async move {
                        Script::new(DIGESTS_DUE)
                            .key(due)
                            .invoke_async(&mut conn)
                            .await
                    }
                })
                .await;
            members
                .iter()
                .filter_map(|m| {
                    let (destination, window, start_ms, end_ms): (String, String, u64, u64) =
                        serde_json::from_str(m).ok()?;
                    Some(DueDigest {
                        destination,
                        window,
                        start_ms,
                        end_ms,
                    })
                })
                .collect()
        })
    }

    fn digest_entries<'a>(
        &'a self,
        destination: &'a str,
        window: &'a str,
    ) -> BoxFuture<'a, Vec<String>> {
        Box::pin(async move {
            let (hash, _, entries) = digest_keys(destination);
            let entries = format!("{entries}{window}");
            self.retrying("digest entries", |mut conn| {
                let (hash, entries) = (hash.clone(), entries.clone());
                async move {
                    Script::new(DIGEST_ENTRIES)
                        .key(hash)
                        .key(entries)
                        .arg(window)
                        .invoke_async(&mut conn)
                        .await
                }
            })
            .await
        })
    }

    fn digest_clear<'a>(&'a self, destination: &'a str, window: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let (_, due, entries) = digest_keys(destination);
            let entries = format!("{entries}{window}");
            let _: () = self
                .retrying("digest clear", |mut conn| {
                    let (due, entries) = (due.clone(), entries.clone());
                    async move {
                        let members: Vec<String> = redis::cmd("ZRANGE")
                            .arg(&due)
                            .arg(0)
                            .arg(-1)
                            .query_async(&mut conn)
                            .await?;
                        let mut pipe = redis::pipe();
                        pipe.atomic().del(&entries).ignore();
                        // The member names the window's start and end too (and Lua's JSON
                        // escapes `/`): compare what it says, not its text.
                        let ours = |m: &&String| {
                            serde_json::from_str::<(String, String, u64, u64)>(m)
                                .is_ok_and(|(d, w, _, _)| d == destination && w == window)
                        };
                        for m in members.iter().filter(ours) {
                            pipe.zrem(&due, m).ignore();
                        }
                        pipe.query_async(&mut conn).await
                    }
                })
                .await;
        })
    }

    fn note<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            let k = key("note", name);
            self.retrying("note", |mut conn| {
                let k = k.clone();
                async move { redis::cmd("GET").arg(k).query_async(&mut conn).await }
            })
            .await
        })
    }

    fn set_note<'a>(
        &'a self,
        name: &'a str,
        value: &'a str,
        retention: Duration,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let k = key("note", name);
            let _: () = self
                .retrying("note", |mut conn| {
                    let k = k.clone();
                    async move {
                        redis::cmd("SET")
                            .arg(k)
                            .arg(value)
                            .arg("PX")
                            .arg(millis(retention))
                            .query_async(&mut conn)
                            .await
                    }
                })
                .await;
        })
    }

    fn redis(&self) -> Option<&RedisStore> {
        Some(self)
    }
}
