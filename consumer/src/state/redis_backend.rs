//! [`StateBackend`] over [`RedisStore`]: each decision is the store's atomic command or script.

use std::time::Duration;

use redis::Script;

use super::backend::{BoxFuture, ClaimState, StateBackend};
use super::redis_store::{RedisStore, key, millis};

/// Take the lease if free or already this holder's (then extend it).
const LEASE: &str = r"
local current = redis.call('GET', KEYS[1])
if not current then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]); return 1 end
if current == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1 end
return 0";

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

    fn window_open<'a>(
        &'a self,
        sink: &'a str,
        key: &'a str,
        window: Duration,
        holder: &'a str,
    ) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            window.is_zero() || RedisStore::window_open(self, sink, key, window, holder).await
        })
    }

    fn window_used<'a>(
        &'a self,
        sink: &'a str,
        key: &'a str,
        window: Duration,
        holder: &'a str,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if !window.is_zero() {
                RedisStore::window_used(self, sink, key, window, holder).await;
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

    fn redis(&self) -> Option<&RedisStore> {
        Some(self)
    }
}
