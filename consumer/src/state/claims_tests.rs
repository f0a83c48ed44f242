//! The shared decisions against the real Redis on 127.0.0.1:6379 (CI starts it). Skipped, with
//! a message, only when nothing answers there.

use std::time::Duration;

use super::*;
use crate::settings::StateStoreConfig;
use crate::state::{LocalStore, RateWindow, RedisStore};

async fn redis() -> Option<RedisStore> {
    let env = |_: &str| None;
    let yaml: serde_yaml_ng::Value =
        serde_yaml_ng::from_str("stateStore: redis://127.0.0.1:6379/0").expect("yaml");
    let node = crate::settings::Node::root("c", Some(&yaml));
    let mut p = crate::settings::Problems::default();
    let ha = crate::settings::parse_ha_for_tests(&node, &env, &mut p);
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
    Claims::new(
        Arc::new(store.clone()),
        instance,
        lease,
        Duration::from_secs(60),
    )
}

impl Claim {
    /// What a process that dies leaves behind: no renewal, no release, no done.
    fn abandon(mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
        self.finished = true;
    }
}

#[tokio::test]
async fn one_instance_handles_the_other_waits_for_done_then_drops_it() {
    let Some(store) = redis().await else { return };
    let key = unique("t/race");
    let a = shared(&store, "a", Duration::from_secs(5));
    let b = shared(&store, "b", Duration::from_secs(5));
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
    let a = shared(&store, "a", lease);
    let b = shared(&store, "b", lease);
    let Begin::Handle(claim) = a.begin(&key).await else {
        panic!("a claims")
    };
    // While a lives its renewals keep the claim past several leases.
    let b_waits = tokio::time::timeout(lease * 3, b.begin(&key)).await;
    assert!(b_waits.is_err(), "b must not take a live claim");
    // a dies: no renewal, no release, no done.
    claim.abandon();
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
    let a = shared(&store, "a", Duration::from_secs(5));
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
    let w = Duration::from_secs(30);
    let admit = |sink: &'static str, key: String, w: Duration, holder: &'static str| {
        let store = store.clone();
        async move {
            let open =
                StateBackend::window_open(&store, RateWindow::new(sink, &key, w, holder)).await;
            if open {
                StateBackend::window_used(&store, RateWindow::new(sink, &key, w, holder)).await;
            }
            open
        }
    };
    assert!(admit("slack:t", app.clone(), w, "h1").await);
    assert!(
        !admit("slack:t", app.clone(), w, "h2").await,
        "same window in the group"
    );
    assert!(admit("teams:t", app.clone(), w, "h2").await, "per sink");
    assert!(admit("slack:t", format!("{app}|a@x"), w, "h2").await);
    let short = unique("short");
    assert!(admit("slack:t", short.clone(), Duration::from_millis(200), "h1").await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        admit("slack:t", short, Duration::from_millis(200), "h2").await,
        "window closed"
    );

    let a = shared(&store, "a", Duration::from_secs(5));
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
    let hour = Duration::from_secs(3600);
    let claims = Claims::new(
        Arc::new(LocalStore::open(dir.path(), hour)),
        "i",
        hour,
        hour,
    );
    let Begin::Handle(claim) = claims.begin("t/e1").await else {
        panic!("new event")
    };
    claims.finish(claim, &[]).await;
    assert!(matches!(claims.begin("t/e1").await, Begin::Duplicate));
    let again = LocalStore::open(dir.path(), hour);
    assert_eq!(again.remembered(), Some(1));
}

/// Two events about one reload handled at once in one process: the second waits for the
/// first and is a duplicate once it is done.
#[tokio::test]
async fn a_second_event_of_a_reload_in_hand_waits_then_is_a_duplicate() {
    let hour = Duration::from_secs(3600);
    let claims = Arc::new(Claims::new(
        Arc::new(LocalStore::memory(hour)),
        "i",
        hour,
        hour,
    ));
    let Begin::Handle(claim) = claims.begin("reload:t/r").await else {
        panic!("first")
    };
    let other = Arc::clone(&claims);
    let second = tokio::spawn(async move { other.begin("reload:t/r").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "waits while the first is in hand");
    claims.finish(claim, &[]).await;
    let second = second.await.expect("task");
    assert!(matches!(second, Begin::Duplicate), "{second:?}");
}

/// A claim whose handling failed (dropped without finish) is released at once: the next copy
/// of the event is handled without waiting for a lease, on this instance or another.
#[tokio::test]
async fn a_claim_dropped_without_finish_is_released_at_once() {
    let hour = Duration::from_secs(3600);
    let claims = Claims::new(Arc::new(LocalStore::memory(hour)), "i", hour, hour);
    let Begin::Handle(claim) = claims.begin("t/e").await else {
        panic!("first")
    };
    drop(claim);
    let again = tokio::time::timeout(Duration::from_secs(2), claims.begin("t/e"))
        .await
        .expect("not waiting for the hour-long lease");
    assert!(matches!(again, Begin::Handle(_)));

    let Some(store) = redis().await else { return };
    let key = unique("t/released");
    let lease = Duration::from_secs(30);
    let a = shared(&store, "a", lease);
    let b = shared(&store, "b", lease);
    let Begin::Handle(claim) = a.begin(&key).await else {
        panic!("a claims")
    };
    drop(claim);
    let taken = tokio::time::timeout(Duration::from_secs(3), b.begin(&key))
        .await
        .expect("b takes it at once, not after the 30 s lease");
    assert!(matches!(taken, Begin::Handle(_)));
}

/// The store's cost per alerted event (claim, rate-limit window, done), file against Redis.
/// `cargo test --release -p consumer --lib store_cost_per_event -- --ignored --nocapture`
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn store_cost_per_event() {
    let Some(store) = redis().await else { return };
    let n = 500;
    let dir = tempfile::tempdir().expect("tempdir");
    let hour = Duration::from_secs(3600);
    let stores: [(&str, Arc<dyn StateBackend>); 2] = [
        ("file", Arc::new(LocalStore::open(dir.path(), hour))),
        ("redis", Arc::new(store.clone())),
    ];
    for (name, backend) in stores {
        let claims = Claims::new(Arc::clone(&backend), "bench", Duration::from_secs(30), hour);
        let started = std::time::Instant::now();
        for i in 0..n {
            let key = unique(&format!("bench/{i}"));
            let Begin::Handle(claim) = claims.begin(&key).await else {
                panic!("new")
            };
            let w = Duration::from_secs(60);
            assert!(
                backend
                    .window_open(RateWindow::new("slack:t", &key, w, &key))
                    .await
            );
            backend
                .window_used(RateWindow::new("slack:t", &key, w, &key))
                .await;
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
    let w = Duration::from_secs(30);
    // The claim is on the reload; the two consumers saw different events of it.
    let holder = "reload:t/r1";
    assert!(StateBackend::window_open(&store, RateWindow::new("slack:t", &app, w, holder)).await);
    // The consumer that reserved it is killed here, before delivering and recording.
    assert!(
        !StateBackend::window_open(&store, RateWindow::new("slack:t", &app, w, "reload:t/r2"))
            .await,
        "another reload's alert of the app is held back while the window is reserved"
    );
    assert!(
        StateBackend::window_open(&store, RateWindow::new("slack:t", &app, w, holder)).await,
        "the reload taken over may still go, whichever event of it the survivor got"
    );
    StateBackend::window_used(&store, RateWindow::new("slack:t", &app, w, holder)).await;
    assert!(
        !StateBackend::window_open(&store, RateWindow::new("slack:t", &app, w, holder)).await,
        "once sent, the window is used, even for the same reload"
    );
}
