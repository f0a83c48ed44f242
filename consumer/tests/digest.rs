//! Alert storms end to end (issue 15): a storm of failed reloads reaches a chat destination
//! that enforces Slack's pace (one message per second, bursts of 3, `429` with
//! `Retry-After: 1` beyond) as a few single alerts and one digest, split into as few messages
//! as fit, naming every app once, with nothing parked; with several consumers on Redis the
//! window is the group's; below the threshold an alert is exactly what it was without
//! digests.

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::Value;
use support::*;

const REDIS: &str = "redis://127.0.0.1:6379/0";
/// The bound for a storm of 200 with `windowSeconds: 10`.
const STORM_DEADLINE: Duration = Duration::from_secs(60);

/// An incoming webhook that enforces a pace as Slack's does: a bucket of `burst` messages,
/// refilled at one per second; a message beyond it gets `429` with `Retry-After: 1`.
#[derive(Clone)]
struct PacedChat {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<Pace>>,
}

struct Pace {
    tokens: f64,
    burst: f64,
    refilled: Instant,
    accepted: Vec<Value>,
    refused: usize,
}

impl PacedChat {
    async fn start(burst: u32) -> Self {
        let state = Arc::new(Mutex::new(Pace {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            refilled: Instant::now(),
            accepted: Vec::new(),
            refused: 0,
        }));
        let shared = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |body: bytes::Bytes| {
            let state = Arc::clone(&shared);
            async move {
                let mut pace = state.lock().expect("pace");
                let now = Instant::now();
                let refill = now.duration_since(pace.refilled).as_secs_f64();
                pace.tokens = (pace.tokens + refill).min(pace.burst);
                pace.refilled = now;
                if pace.tokens >= 1.0 {
                    pace.tokens -= 1.0;
                    let message = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    pace.accepted.push(message);
                    StatusCode::OK.into_response()
                } else {
                    pace.refused += 1;
                    (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "1")]).into_response()
                }
            }
        });
        let addr = serve(app).await;
        Self { addr, state }
    }

    fn url(&self) -> String {
        format!("http://{}/services/T000/B000/paced", self.addr)
    }

    fn accepted(&self) -> Vec<Value> {
        self.state.lock().expect("pace").accepted.clone()
    }

    fn refused(&self) -> usize {
        self.state.lock().expect("pace").refused
    }
}

/// App ids of one width, so none is a part of another.
fn apps(n: usize) -> Vec<String> {
    let run = testkit::unique("storm").replace(['-', '_'], "");
    (0..n).map(|i| format!("app{i:04}x{run}")).collect()
}

fn failed_reload(app: &str) -> Vec<u8> {
    event(
        Sample::CloudEventsAppReload,
        &testkit::unique(&format!("ev-{app}")),
        TENANT,
        app,
    )
}

/// For each app, the accepted messages that name it.
fn named_in(messages: &[Value], apps: &[String]) -> BTreeMap<String, usize> {
    let texts: Vec<String> = messages.iter().map(Value::to_string).collect();
    apps.iter()
        .map(|app| {
            let n = texts.iter().filter(|t| t.contains(app.as_str())).count();
            (app.clone(), n)
        })
        .collect()
}

/// Waits until every app is named in an accepted message, at most `deadline`.
async fn until_all_named(chat: &PacedChat, apps: &[String], deadline: Duration) -> Vec<Value> {
    let end = Instant::now() + deadline;
    loop {
        let messages = chat.accepted();
        if named_in(&messages, apps).values().all(|n| *n > 0) {
            return messages;
        }
        assert!(
            Instant::now() < end,
            "within {deadline:?} only {} of {} apps were named, in {} messages ({} refused with 429)",
            named_in(&messages, apps)
                .values()
                .filter(|n| **n > 0)
                .count(),
            apps.len(),
            messages.len(),
            chat.refused()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A digest's heading counts the reloads ("57 Qlik Cloud app reloads failed"); a single
/// alert's does not.
fn is_digest(message: &Value) -> bool {
    let text = message.to_string();
    text.contains(" Qlik Cloud app reloads failed")
        || text.contains("\"1 Qlik Cloud app reload failed")
}

/// A storm of 200 against a paced chat destination: every app named within 60 s, in at
/// most 20 messages, each app once, nothing parked.
async fn storm(broker: &testkit::TestBroker, teams: bool) {
    const N: usize = 200;
    let chat = PacedChat::start(3).await;
    let destinations = if teams {
        Destinations {
            teams: Some(chat.url()),
            teams_formatted: true,
            ..Default::default()
        }
    } else {
        Destinations {
            slack: Some(chat.url()),
            slack_formatted: true,
            ..Default::default()
        }
    };
    let setup = write_config(
        broker,
        &Destinations {
            digest: Some((3, 10)),
            max_attempts: 3,
            ..destinations
        },
    );
    let running = start(&setup).await;
    let apps = apps(N);
    let started = Instant::now();
    burst(
        broker,
        &setup.topic,
        apps.iter().map(|a| failed_reload(a)).collect(),
    )
    .await;
    let messages = until_all_named(&chat, &apps, STORM_DEADLINE).await;
    let took = started.elapsed();
    let named = named_in(&messages, &apps);
    let twice: Vec<_> = named.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "apps named in more than one message: {twice:?}"
    );
    assert!(
        messages.len() <= 20,
        "{} messages for {N} failed reloads",
        messages.len()
    );
    let digests = messages.iter().filter(|m| is_digest(m)).count();
    assert!(digests >= 1, "no digest among {} messages", messages.len());
    assert_eq!(
        messages.len() - digests,
        3,
        "the first afterAlerts (3) go out one by one"
    );
    // Every digest message parses as the destination's format and says which part it is.
    if digests > 1 {
        assert!(
            messages
                .iter()
                .filter(|m| is_digest(m))
                .all(|m| m.to_string().contains(" of ")),
            "a split digest says which part each message is"
        );
    }
    until_nothing_parked(&setup).await;
    running.stop().await;
    eprintln!(
        "{}: storm of {N} ({}) → {} messages ({digests} digest parts), {} refused with 429, all named after {took:?}",
        broker.name,
        if teams { "Teams" } else { "Slack" },
        messages.len(),
        chat.refused()
    );
}

#[tokio::test]
async fn a_storm_reaches_slack_as_a_digest_within_its_pace() {
    for broker in testkit::brokers() {
        storm(&broker, false).await;
    }
}

#[tokio::test]
async fn a_storm_reaches_teams_as_a_digest() {
    let broker = testkit::brokers().remove(0);
    storm(&broker, true).await;
}

/// Below the threshold nothing changes: the alert is the message it is with digests off.
#[tokio::test]
async fn an_alert_below_the_threshold_is_unchanged() {
    let broker = testkit::brokers().remove(0);
    let mut bodies = Vec::new();
    for digest in [None, Some((3, 60))] {
        let mut slack = Receiver::start().await;
        let setup = write_config(
            &broker,
            &Destinations {
                slack: Some(slack.url("services/T/B/x")),
                slack_formatted: true,
                digest,
                ..Default::default()
            },
        );
        let mut running = start(&setup).await;
        let event_id = "below-threshold-event";
        publish(
            &broker,
            &setup.topic,
            event(Sample::CloudEventsAppReload, event_id, TENANT, "app-below"),
        )
        .await;
        running.handled().await;
        bodies.push(slack.delivered().await.body);
        running.stop().await;
    }
    assert_eq!(bodies[0], bodies[1]);
    assert!(!is_digest(&bodies[1]));
}

/// Two consumers on Redis share one subscription group: the storm is split between them, and
/// the window is the group's, so the destination still gets 3 single alerts and one digest.
#[tokio::test]
async fn a_storm_split_across_consumers_gives_one_digest() {
    if skip_without_redis() {
        return;
    }
    const N: usize = 60;
    let broker = testkit::brokers().remove(0);
    let chat = PacedChat::start(100).await;
    let group = testkit::unique("digest-group");
    let root = testkit::unique("digest-root");
    let setups: Vec<Setup> = (0..2)
        .map(|_| {
            write_config(
                &broker,
                &Destinations {
                    slack: Some(chat.url()),
                    slack_formatted: true,
                    digest: Some((3, 4)),
                    v5: true,
                    shared_group: Some(group.clone()),
                    topic_root: Some(root.clone()),
                    state_store: Some(REDIS.to_owned()),
                    ..Default::default()
                },
            )
        })
        .collect();
    forget_digest_windows().await;
    let mut consumers = Vec::new();
    for setup in &setups {
        consumers.push(start(setup).await);
    }
    let apps = apps(N);
    burst(
        &broker,
        &setups[0].topic,
        apps.iter().map(|a| failed_reload(a)).collect(),
    )
    .await;
    let messages = until_all_named(&chat, &apps, STORM_DEADLINE).await;
    let named = named_in(&messages, &apps);
    assert!(named.values().all(|n| *n == 1), "each app once: {named:?}");
    let digests: Vec<String> = messages
        .iter()
        .filter(|m| is_digest(m))
        .map(Value::to_string)
        .collect();
    assert_eq!(
        messages.len() - digests.len(),
        3,
        "3 single alerts for the group"
    );
    // One window for the group: every part counts all the folded alerts, whichever consumer
    // handled them.
    let heading = format!("{} Qlik Cloud app reloads failed", N - 3);
    for (part, text) in digests.iter().enumerate() {
        assert!(
            text.contains(&heading),
            "part {part} is not of the group's one digest: {text}"
        );
        if digests.len() > 1 {
            assert!(text.contains(&format!(" of {})", digests.len())), "{text}");
        }
    }
    for running in consumers {
        running.stop().await;
    }
}

/// Digest windows an earlier run left in Redis (killed mid-window) would be sent to this
/// run's destination, which has the same name.
async fn forget_digest_windows() {
    let client = redis::Client::open(REDIS).expect("Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("qscloud-consumer:digest*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    for key in keys {
        let _: () = redis::cmd("DEL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}

/// Folded alerts are in the state directory before their events are acknowledged: a consumer
/// killed (SIGKILL) while its window is open leaves them to the next start, which sends the
/// digest naming every one of them.
#[tokio::test]
async fn a_digest_survives_a_kill_while_its_window_is_open() {
    const N: usize = 8;
    let broker = testkit::brokers().remove(0);
    let mut slack = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/T/B/kill")),
            slack_formatted: true,
            digest: Some((3, 4)),
            ..Default::default()
        },
    );
    let mut consumer = spawn_binary(&setup).await;
    let apps = apps(N);
    burst(
        &broker,
        &setup.topic,
        apps.iter().map(|a| failed_reload(a)).collect(),
    )
    .await;
    let folded = N - 3;
    let end = Instant::now() + WAIT;
    while consumer.stderr().matches("folded into the digest").count() < folded {
        assert!(Instant::now() < end, "{folded} alerts folded");
        consumer.wait_for_line("folded into the digest").await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The first alerts went out on their own: kill only once each is remembered as handled,
    // or a kill between its delivery and that record sends it again after the restart (at
    // least once, as documented), which is not what this test is about.
    let seen = setup.state_dir.join("seen-events.json");
    let handled = || {
        std::fs::read_to_string(&seen)
            .map(|text| text.matches("\"reload:").count())
            .unwrap_or(0)
    };
    while handled() < N {
        assert!(
            Instant::now() < end,
            "{N} reloads recorded as handled: {}",
            handled()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = consumer.kill().await;
    assert!(
        !log.contains("digest made"),
        "killed before the window closed: {log}"
    );
    let mut restarted = spawn_binary(&setup).await;
    restarted.wait_for_line("digest made").await;
    let mut messages = Vec::new();
    while !messages.iter().any(is_digest) {
        messages.push(slack.delivered().await.body);
    }
    let named = named_in(&messages, &apps);
    assert!(named.values().all(|n| *n == 1), "each app once: {named:?}");
    let digest = messages.iter().find(|m| is_digest(m)).map(Value::to_string);
    assert!(
        digest.is_some_and(|d| d.contains(&format!("{folded} Qlik Cloud app reloads failed"))),
        "{messages:?}"
    );
    // The held copy of the digest is removed once its delivery is confirmed: nothing stays.
    until_nothing_parked(&setup).await;
    restarted.kill().await;
}
