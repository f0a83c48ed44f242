//! The shared decisions against the real Redis on 127.0.0.1:6379 (CI starts it). Skipped, with
//! a message, only when nothing answers there.

use std::time::Duration;

use super::*;
use crate::config::StateStoreConfig;
use crate::delivery::RateLimits;

async fn redis() -> Option<RedisStore> {
    let env = |_: &str| None;
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("stateStore: redis://127.0.0.1:6379/0").expect("yaml");
    let node = crate::config::Node::root("c", Some(&yaml));
    let mut p = crate::config::Problems::default();
    let ha = crate::config::parse_ha_for_tests(&node, &env, &mut p);
    let StateStoreConfig::Redis(url) = ha.state_store else {
        panic!("redis url")
    };
    let store = RedisStore::open(&url).expect("client");
    if store.ping(Duration::from_secs(2)).await {
        Some(store)
    } else {
        eprintln!("SKIPPED: no Redis answers on 127.0.0.1:6379 (CI starts one)");
        None
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NONCE.fetch_add(1, Ordering::Relaxed)
    )
}

fn shared(store: &RedisStore, instance: &str, lease: Duration) -> Claims {
    Claims::Shared(SharedClaims::new(
        store.clone(),
        instance,
        lease,
        Duration::from_secs(60),
    ))
}

#[tokio::test]
async fn one_instance_handles_the_other_waits_for_done_then_drops_it() {
    let Some(store) = redis().await else { return };
    let key = unique("t/race");
    let mut a = shared(&store, "a", Duration::from_secs(5));
    let mut b = shared(&store, "b", Duration::from_secs(5));
    let Begin::Handle(claim) = a.begin(&key).await else {
        panic!("first claim is mine")
    };
    let waiting = tokio::spawn(async move { matches!(b.begin(&key).await, Begin::Duplicate) });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiting.is_finished(),
        "b must wait while a holds the claim"
    );
    a.finish(claim, &[]).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("b decides once a is done")
            .expect("task"),
        "b sees done: a duplicate, not a second alert"
    );
}

#[tokio::test]
async fn a_dead_holder_is_taken_over_when_its_lease_expires() {
    let Some(store) = redis().await else { return };
    let key = unique("t/takeover");
    let lease = Duration::from_millis(600);
    let mut a = shared(&store, "a", lease);
    let mut b = shared(&store, "b", lease);
    let Begin::Handle(claim) = a.begin(&key).await else {
        panic!("a claims")
    };
    // While a lives its renewals keep the claim past several leases.
    let b_waits = tokio::time::timeout(lease * 3, b.begin(&key)).await;
    assert!(b_waits.is_err(), "b must not take a live claim");
    // a dies: no renewal, no done.
    drop(claim);
    let started = std::time::Instant::now();
    let Begin::Handle(taken) = tokio::time::timeout(lease * 4, b.begin(&key))
        .await
        .expect("b takes over after the lease")
    else {
        panic!("b handles it")
    };
    assert!(started.elapsed() <= lease * 2);
    b.finish(taken, &[]).await;
    assert!(matches!(a.begin(&key).await, Begin::Duplicate));
}

#[tokio::test]
async fn a_claim_lost_during_an_outage_is_counted_not_silent() {
    let Some(store) = redis().await else { return };
    let key = unique("t/lost");
    let mut a = shared(&store, "a", Duration::from_secs(5));
    let Begin::Handle(claim) = a.begin(&key).await else {
        panic!("a claims")
    };
    // A store restarted without persistence forgets the claim.
    let mut conn = store.connection();
    let _: () = redis::AsyncCommands::del(&mut conn, format!("qscloud-consumer:event:{key}"))
        .await
        .expect("del");
    let before = crate::metrics::global().claims_lost_count();
    a.finish(claim, &[]).await;
    assert_eq!(crate::metrics::global().claims_lost_count(), before + 1);
}

#[tokio::test]
async fn rate_limit_windows_and_dedupe_keys_are_one_for_the_group() {
    let Some(store) = redis().await else { return };
    let app = unique("app");
    let one = RateLimits::shared(store.clone());
    let two = RateLimits::shared(store.clone());
    let w = Duration::from_secs(30);
    assert!(one.admit("slack:t", &app, w).await);
    assert!(
        !two.admit("slack:t", &app, w).await,
        "same window in the group"
    );
    assert!(two.admit("teams:t", &app, w).await, "per sink");
    assert!(two.admit("slack:t", &format!("{app}|a@x"), w).await);
    let short = unique("short");
    assert!(
        one.admit("slack:t", &short, Duration::from_millis(200))
            .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        two.admit("slack:t", &short, Duration::from_millis(200))
            .await,
        "window closed"
    );

    let mut a = shared(&store, "a", Duration::from_secs(5));
    let b = shared(&store, "b", Duration::from_secs(5));
    let reload = unique("t/reload");
    let event = unique("t/event");
    assert!(!b.seen(&event).await);
    let Begin::Handle(claim) = a.begin(&reload).await else {
        panic!("new reload")
    };
    a.finish(claim, std::slice::from_ref(&event)).await;
    assert!(
        b.seen(&event).await,
        "a key remembered beside a claim is the group's"
    );
}

#[tokio::test]
async fn the_file_store_keeps_todays_dedupe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut claims = Claims::File(Dedupe::load(dir.path(), Duration::from_secs(3600)));
    let Begin::Handle(claim) = claims.begin("t/e1").await else {
        panic!("new event")
    };
    claims.finish(claim, &[]).await;
    assert!(matches!(claims.begin("t/e1").await, Begin::Duplicate));
    let again = Claims::File(Dedupe::load(dir.path(), Duration::from_secs(3600)));
    assert_eq!(again.remembered(), Some(1));
}

/// The store's cost per alerted event (claim, rate-limit window, done), file against Redis.
/// `cargo test --release -p consumer --lib store_cost_per_event -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn store_cost_per_event() {
    let Some(store) = redis().await else { return };
    let n = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let stores = [
        (
            "file",
            Claims::File(Dedupe::load(dir.path(), Duration::from_secs(3600))),
            RateLimits::load(dir.path()),
        ),
        (
            "redis",
            shared(&store, "bench", Duration::from_secs(30)),
            RateLimits::shared(store.clone()),
        ),
    ];
    for (name, mut claims, limits) in stores {
        let started = std::time::Instant::now();
        for i in 0..n {
            let key = unique(&format!("bench/{i}"));
            let Begin::Handle(claim) = claims.begin(&key).await else {
                panic!("new")
            };
            assert!(limits.admit("slack:t", &key, Duration::from_secs(60)).await);
            claims.finish(claim, &[]).await;
        }
        let per = started.elapsed() / n;
        println!("store cost per event ({name}): {per:?}");
    }
}

/// A window reserved by an instance that died before delivering is no sent alert: the
/// instance that takes the same event over may send it; any other alert of the app waits.
#[tokio::test]
async fn a_reserved_window_passes_to_the_instance_taking_the_event_over() {
    let Some(store) = redis().await else { return };
    let app = unique("app");
    let dead = RateLimits::shared(store.clone());
    let survivor = RateLimits::shared(store.clone());
    let w = Duration::from_secs(30);
    assert!(dead.is_open("slack:t", &app, w, "t|event-1").await);
    // `dead` is killed here, before delivering and recording.
    assert!(
        !survivor.is_open("slack:t", &app, w, "t|event-2").await,
        "another alert of the app is held back while the window is reserved"
    );
    assert!(
        survivor.is_open("slack:t", &app, w, "t|event-1").await,
        "the event taken over may still go"
    );
    survivor.record("slack:t", &app, w, "t|event-1").await;
    assert!(
        !survivor.is_open("slack:t", &app, w, "t|event-1").await,
        "once sent, the window is used, even for the same event"
    );
    assert!(!dead.is_open("slack:t", &app, w, "t|event-2").await);
}
