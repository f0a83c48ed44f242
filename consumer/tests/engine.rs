//! The consumer's engine end to end, on every test broker (the embedded one, and Mosquitto on
//! 127.0.0.1:1883 when it answers) and, where consumers share state, the real Redis on
//! 127.0.0.1:6379 (those tests are skipped with a message when it does not answer):
//!
//! - events handled at once up to `concurrency`, acknowledged in the order they came;
//! - a queue and worker per destination: a hanging one does not hold up another, and its
//!   alerts are held on disk (`redelivery.holdSeconds`) so their events can be acknowledged;
//! - the circuit breaker and scheduled redelivery (`redelivery.scheduleSeconds`): a destination
//!   that is down gets parked alerts without requests, is probed on the schedule, and drains
//!   its backlog in order once it is back, without `consumer replay`; a later outage waits for
//!   the schedule again; past the schedule the alert waits for `replay`; an alert refused for
//!   good does not keep the rest of the backlog waiting; without a schedule a failure does not
//!   shut the destination;
//! - `429` + `Retry-After` pauses the destination instead of failing the alert, and
//!   `Retry-After: 0` does not make a tight loop;
//! - consumers sharing a dead-letter directory redeliver each parked alert once; a restarted
//!   consumer redelivers what it held; a file another consumer leased does not slow new alerts;
//! - a reload taken over from a consumer that died may still use the rate-limit window its
//!   claim reserved;
//! - the destination's metrics follow all of it.
//!
//! Proofs are counts, not timings, where they can be (a gate at the fake tenant, requests per
//! event at the receiver); the few negative checks ("nothing more arrives") wait a bounded
//! moment. Schedules are one or two seconds, so the file runs in well under a minute.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use consumer::delivery::{DeadLetter, Outcome};
use consumer::transforms::Handled;
use support::fake_tenant::{FakeTenant, GateStats, Route};
use support::*;

const REDIS: &str = "redis://127.0.0.1:6379/0";
const WEBHOOK: &str = "webhook:ops";

// ---------------------------------------------------------------- helpers

/// A Redis-backed member of a group: shared store, short claim lease.
fn on_redis(setup: &mut Setup) {
    setup.edit(|config| {
        config
            .consumer("stateStore", REDIS)
            .consumer("claimLeaseSeconds", 2);
    });
}

/// A failed reload of its own app.
fn failed(id: &str) -> Vec<u8> {
    event(
        Sample::CloudEventsAppReload,
        id,
        TENANT,
        &format!("app-{id}"),
    )
}

/// Publishes `n` failed reloads at once, each of its own app; returns their event ids.
async fn burst_failed(
    broker: &testkit::TestBroker,
    topic: &str,
    prefix: &str,
    n: usize,
) -> Vec<String> {
    let ids: Vec<String> = (0..n)
        .map(|i| testkit::unique(&format!("{prefix}{i}")))
        .collect();
    burst(broker, topic, ids.iter().map(|id| failed(id)).collect()).await;
    ids
}

/// Waits (bounded by [`WAIT`]) until `ready` holds, looking every 20 ms.
async fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The webhook requests' event ids, in arrival order.
fn event_ids(requests: &[Request]) -> Vec<String> {
    requests
        .iter()
        .map(|r| r.body["eventId"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The next `n` requests the receiver answered 200, by event id, in arrival order.
async fn delivered_ids(receiver: &mut Receiver, n: usize) -> Vec<String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let r = receiver.delivered().await;
        out.push(r.body["eventId"].as_str().unwrap_or("?").to_owned());
    }
    out
}

/// Waits until a line of the binary's log contains every one of `needles`; returns it.
async fn wait_for_log(consumer: &mut Binary, needles: &[&str]) -> String {
    consumer
        .wait_until(&format!("line with {needles:?}"), |l| {
            needles.iter().all(|n| l.contains(n))
        })
        .await
}

/// Waits until a line of the binary's log contains all of `about` and one of `any`; returns it.
async fn wait_for_log_any(consumer: &mut Binary, about: &[&str], any: &[&str]) -> String {
    consumer
        .wait_until(&format!("line with {about:?} and one of {any:?}"), |l| {
            about.iter().all(|n| l.contains(n)) && any.iter().any(|n| l.contains(n))
        })
        .await
}

/// The timestamp a log line starts with.
fn log_time(line: &str) -> time::OffsetDateTime {
    let stamp = line.split_whitespace().next().unwrap_or_default();
    time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("no timestamp ({e}) at the start of {line}"))
}

fn log_lines_about<'a>(log: &'a str, id: &str) -> Vec<&'a str> {
    log.lines().filter(|l| l.contains(id)).collect()
}

fn outcome_of<'a>(outcomes: &'a [(String, Outcome)], sink: &str) -> &'a Outcome {
    &outcomes
        .iter()
        .find(|(name, _)| name.starts_with(sink))
        .unwrap_or_else(|| panic!("no outcome for {sink} in {outcomes:?}"))
        .1
}

// ---------------------------------------------------------------- 1. concurrency

/// Five failed reloads whose tenant API calls are answered only once five are in hand at once
/// (a gate at the fake tenant): with room for them, all five are let through together; with
/// `concurrency: 1` the tenant never sees two at once. No timing involved in either proof: the
/// gate counts.
#[tokio::test]
async fn events_are_handled_at_once_up_to_concurrency() {
    const K: usize = 5;
    for broker in testkit::brokers() {
        for (concurrency, v5) in [(8, false), (8, true), (1, false), (1, true)] {
            let tenant = FakeTenant::start().await;
            // A request that waits this long in vain is answered alone (concurrency 1 needs
            // that to go on at all); with room for five, none may.
            let max_wait = if concurrency >= K as u64 {
                Duration::from_secs(3)
            } else {
                Duration::from_millis(200)
            };
            tenant.gate(Route::App, K, max_wait);
            let mut webhook = Receiver::start().await;
            let setup = write_config(
                &broker,
                &Destinations {
                    concurrency: Some(concurrency),
                    v5,
                    ..Destinations::one_webhook(webhook.url("hook")).through(&tenant)
                },
            );
            let mut running = start(&setup).await;
            let ids = burst_failed(&broker, &setup.topic, "conc", K).await;
            let mut acked = Vec::new();
            for _ in 0..K {
                let (alert, outcomes) = alerted(running.handled().await);

                assert!(
                    matches!(outcome_of(&outcomes, WEBHOOK), Outcome::Delivered { .. }),
                    "{outcomes:?}"
                );
                acked.push(alert.event_id);
            }
            let got: BTreeSet<String> = delivered_ids(&mut webhook, K).await.into_iter().collect();
            let want: BTreeSet<String> = ids.iter().cloned().collect();
            assert_eq!(got, want, "{}: every alert arrives", broker.name);
            assert_eq!(acked, ids, "{}: acknowledged in publish order", broker.name);
            let stats = tenant.gate_stats();
            let label = format!(
                "{} (MQTT {}), concurrency {concurrency}: {stats:?}",
                broker.name,
                if v5 { 5 } else { 3 }
            );
            if concurrency >= K as u64 {
                assert_eq!(
                    stats,
                    GateStats {
                        max_in_hand: K,
                        released_together: K,
                        released_alone: 0,
                    },
                    "{label}: all five events were in hand at once"
                );
            } else {
                assert_eq!(stats.max_in_hand, 1, "{label}: one event at a time");
                assert_eq!(stats.released_alone, K, "{label}");
            }
            running.stop().await;
        }
    }
}

// ---------------------------------------------------------------- 2. ordered acks

/// The first event's tenant API calls are held until the second event's alert was delivered:
/// the second finishes first, yet nothing is acknowledged before the first, and the observer
/// (told at acknowledgement) reports publish order.
#[tokio::test]
async fn acknowledgements_keep_publish_order() {
    for broker in testkit::brokers() {
        let tenant = FakeTenant::start().await;
        let mut webhook = Receiver::start().await;
        let setup = write_config(
            &broker,
            &Destinations::one_webhook(webhook.url("hook")).through(&tenant),
        );
        let mut running = start(&setup).await;
        let [slow, fast] = [testkit::unique("slow"), testkit::unique("fast")];
        // Every tenant API path of the slow event's app waits.
        tenant.hold(&format!("app-{slow}"));
        publish(&broker, &setup.topic, failed(&slow)).await;
        publish(&broker, &setup.topic, failed(&fast)).await;
        let first = webhook.delivered().await;
        assert_eq!(
            first.body["eventId"], fast,
            "{}: the second event's alert goes out while the first waits",
            broker.name
        );
        assert!(
            tenant.count_path(&format!("app-{slow}")) > 0,
            "the slow event was being handled"
        );
        // The second is finished; it must wait for the first to be acknowledged.
        let early = tokio::time::timeout(Duration::from_millis(500), running.next()).await;
        assert!(
            early.is_err(),
            "{}: acknowledged before the first message finished: {early:?}",
            broker.name
        );
        tenant.release();
        let mut order = Vec::new();
        for _ in 0..2 {
            order.push(alerted(running.handled().await).0.event_id);
        }
        assert_eq!(order, [slow.clone(), fast], "{}: ack order", broker.name);
        assert_eq!(webhook.delivered().await.body["eventId"], slow);
        running.stop().await;
    }
}

// ---------------------------------------------------------------- 3. a hanging destination

/// Slack answers, the generic webhook hangs: all 20 alerts reach Slack, and every event is
/// acknowledged once its webhook alert is held on disk (`holdSeconds: 1`). When the webhook
/// answers again the held alerts go out, once each, and their files are removed.
#[tokio::test]
async fn a_hanging_destination_does_not_hold_up_another() {
    const N: usize = 20;
    for broker in testkit::brokers() {
        let mut slack = Receiver::start().await;
        let mut webhook = Receiver::start().await;
        webhook.set_mode(Mode::Hang);
        let setup = write_config(
            &broker,
            &Destinations {
                slack: Some(slack.url("services/T000/B000/slack-token")),
                // The formatted message names the app, so each can be told apart.
                slack_formatted: true,
                webhook: Some(webhook.url("hook")),
                // Enough tries (1 s each) to outlast the switch back to answering: the held
                // alerts are delivered by the worker's own retries, not by redelivery (whose
                // default first step, 60 s, this test would not wait for).
                max_attempts: 10,
                hold_seconds: Some(1),
                webhook_timeout: Some(1),
                ..Default::default()
            },
        );
        let mut running = start(&setup).await;
        let ids = burst_failed(&broker, &setup.topic, "hang", N).await;
        let mut acked = Vec::new();
        for _ in 0..N {
            let (alert, outcomes) = alerted(running.handled().await);

            assert!(
                matches!(outcome_of(&outcomes, "slack"), Outcome::Delivered { .. }),
                "{outcomes:?}"
            );
            assert!(
                matches!(outcome_of(&outcomes, WEBHOOK), Outcome::Held { .. }),
                "{}: the hanging webhook's alert is held: {outcomes:?}",
                broker.name
            );
            acked.push(alert.event_id);
        }
        assert_eq!(
            acked, ids,
            "{}: every event acknowledged, in order",
            broker.name
        );
        let mut at_slack = BTreeSet::new();
        for _ in 0..N {
            let message = slack.delivered().await.body.to_string();
            let about = ids
                .iter()
                .find(|id| message.contains(&format!("app-{id}")))
                .unwrap_or_else(|| panic!("a Slack message about none of the events: {message}"));
            at_slack.insert(about.clone());
        }
        assert_eq!(
            at_slack.len(),
            N,
            "{}: all alerts reached Slack",
            broker.name
        );
        let held: BTreeSet<String> = setup
            .parked_files()
            .iter()
            .map(|p| DeadLetter::read(p).expect("held file").alert.event_id)
            .collect();
        assert_eq!(
            held,
            ids.iter().cloned().collect::<BTreeSet<_>>(),
            "{}: every webhook alert held on disk",
            broker.name
        );
        assert!(webhook.requests() >= 1, "the webhook was tried");

        webhook.set_mode(Mode::Ok);
        let got = delivered_ids(&mut webhook, N).await;
        assert_eq!(got, ids, "{}: held alerts delivered, in order", broker.name);
        wait_until("the held files are removed", || {
            setup.parked_files().is_empty()
        })
        .await;
        running.stop().await;
        assert!(
            webhook.drain_delivered().is_empty(),
            "{}: no alert delivered twice",
            broker.name
        );
    }
}

// ---------------------------------------------------------------- 4 + 9. heals by itself

/// `503`, one attempt, a short schedule: the alert is parked and the destination marked down;
/// a second alert while down is parked at once without a request; when the destination
/// answers again both go out in order without `consumer replay`, the dead-letter directory
/// empties, the log says it is back up, and `/metrics` follows (`destination_up` 0 then 1,
/// `redeliveries_total{outcome="delivered"}`). A later outage waits for the schedule again.
#[tokio::test]
async fn a_down_destination_heals_without_a_command() {
    for broker in testkit::brokers() {
        let mut webhook = Receiver::failing().await;
        let mut setup = write_config(
            &broker,
            &Destinations {
                // First step 2 s: at least a whole second before the first probe (the schedule
                // counts Unix seconds), which the last part of the test relies on.
                redelivery_schedule: Some(vec![2, 1, 1, 1, 1, 1, 1, 1]),
                ..Destinations::one_webhook(webhook.url("hook"))
            },
        );
        let port = free_port();
        setup.edit(|config| {
            config.consumer("metrics.listen", format!("127.0.0.1:{port}"));
        });
        let mut consumer = spawn_binary(&setup).await;
        let up = format!("qscloud_consumer_destination_up{{sink=\"{WEBHOOK}\"}}");
        wait_for_metric(port, &up, |v| v == 1.0).await;

        let [one, two, three] = [
            testkit::unique("heal1"),
            testkit::unique("heal2"),
            testkit::unique("heal3"),
        ];
        publish(&broker, &setup.topic, failed(&one)).await;
        assert_eq!(webhook.failed().await.body["eventId"], one);
        consumer.wait_for_line("destination is down").await;
        wait_for_metric(port, &up, |v| v == 0.0).await;

        publish(&broker, &setup.topic, failed(&two)).await;
        let parked_line =
            wait_for_log(&mut consumer, &[&format!("event {two:?}"), "alert parked"]).await;
        assert!(
            parked_line.contains("destination is down; parked for redelivery (last error:"),
            "{}: parked at once because the destination is down: {parked_line}",
            broker.name
        );
        assert!(
            parked_line.contains("attempts=0"),
            "{}: no attempt made: {parked_line}",
            broker.name
        );
        assert_eq!(setup.parked_files().len(), 2);

        webhook.set_mode(Mode::Ok);
        let got = delivered_ids(&mut webhook, 2).await;
        assert_eq!(got, [one.clone(), two.clone()], "{}: in order", broker.name);
        let refused = event_ids(&webhook.drain_failed());
        assert!(
            !refused.contains(&two),
            "{}: the alert parked while down never reached the destination before it was \
             back ({refused:?})",
            broker.name
        );
        wait_until("the dead-letter directory is empty", || {
            setup.parked_files().is_empty()
        })
        .await;
        consumer.wait_for_line("destination is back up").await;
        wait_for_metric(port, &up, |v| v == 1.0).await;
        let delivered = format!(
            "qscloud_consumer_redeliveries_total{{sink=\"{WEBHOOK}\",outcome=\"delivered\"}}"
        );
        wait_for_metric(port, &delivered, |v| v >= 1.0).await;
        let text = metrics(port).await;
        for series in [
            format!("qscloud_consumer_destination_queue_depth{{sink=\"{WEBHOOK}\"}}"),
            "qscloud_consumer_events_in_flight".to_owned(),
        ] {
            assert!(
                sample(&text, &series).is_some(),
                "missing {series}:\n{text}"
            );
        }

        // A second outage: the first probe waits for the schedule's first step (2 s, so at
        // least a whole second) again. Measured on the consumer's own log clock.
        webhook.set_mode(Mode::Fail);
        publish(&broker, &setup.topic, failed(&three)).await;
        assert_eq!(webhook.failed().await.body["eventId"], three);
        let about = format!("event {three:?}");
        let parked = wait_for_log(&mut consumer, &[&about, "alert parked"]).await;
        let probed = wait_for_log(&mut consumer, &[&about, "redelivery failed"]).await;
        let gap = log_time(&probed) - log_time(&parked);
        assert!(
            gap >= time::Duration::milliseconds(900),
            "{}: a second outage probed {gap} after parking instead of after \
             scheduleSeconds[0]:\n{parked}\n{probed}",
            broker.name
        );
        webhook.set_mode(Mode::Ok);
        assert_eq!(webhook.delivered().await.body["eventId"], three);
        consumer.kill().await;
    }
}

/// Two alerts parked while the destination is down; when it answers again it refuses the
/// first for good (`400`, e.g. a payload it cannot take) and accepts the other. The `400`
/// shows the destination is up: the second alert must go out, not wait behind the first until
/// the schedule of both is used up.
#[tokio::test]
async fn an_alert_refused_for_good_does_not_block_the_backlog() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::failing().await;
    let setup = write_config(
        &broker,
        &Destinations {
            redelivery_schedule: Some(vec![1; 6]),
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    let mut running = start(&setup).await;
    let [poison, fine] = [testkit::unique("poison"), testkit::unique("fine")];
    for id in [&poison, &fine] {
        publish(&broker, &setup.topic, failed(id)).await;
        let (_, outcomes) = alerted(running.handled().await);
        assert!(
            matches!(outcome_of(&outcomes, WEBHOOK), Outcome::Parked { .. }),
            "{outcomes:?}"
        );
    }
    webhook.refuse(&poison);
    webhook.set_mode(Mode::Ok);
    let deadline = Instant::now() + WAIT;
    let mut delivered = Vec::new();
    while delivered.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        delivered = event_ids(&webhook.drain_delivered());
    }
    let refused = event_ids(&webhook.drain_failed());
    let files: Vec<serde_json::Value> = setup.parked_files().iter().map(|p| read_json(p)).collect();
    running.stop().await;
    assert_eq!(
        delivered,
        [fine],
        "the alert behind one refused for good was never tried (requests refused: {refused:?}; \
         parked: {files:?})"
    );
}

// ---------------------------------------------------------------- 5. schedule used up

/// Always `503`, `scheduleSeconds: [1]`: one redelivery, then the file says `exhausted`, no
/// more requests, `replay --list` shows it, and `replay` delivers it once the destination
/// answers.
#[tokio::test]
async fn a_used_up_schedule_leaves_the_alert_for_replay() {
    for broker in testkit::brokers() {
        let mut webhook = Receiver::failing().await;
        let setup = write_config(
            &broker,
            &Destinations {
                redelivery_schedule: Some(vec![1]),
                ..Destinations::one_webhook(webhook.url("hook"))
            },
        );
        let mut consumer = spawn_binary(&setup).await;
        let id = testkit::unique("used-up");
        publish(&broker, &setup.topic, failed(&id)).await;
        consumer.wait_for_line("redelivery schedule used up").await;
        let files = setup.parked_files();
        assert_eq!(files.len(), 1, "{}: {files:?}", broker.name);
        // The log line comes just before the file is rewritten.
        wait_until("the file says exhausted", || {
            read_json(&files[0])["exhausted"] == true
        })
        .await;
        let file = read_json(&files[0]);
        assert_eq!(file["exhausted"], true, "{file}");
        assert_eq!(file["redeliveries"], 1, "{file}");
        assert_eq!(file["alert"]["eventId"], id.as_str(), "{file}");
        let tried = event_ids(&webhook.drain_failed());
        assert_eq!(
            tried,
            [id.clone(), id.clone()],
            "first try + one redelivery"
        );

        let (code, listed, _) = run_command(&setup, &["replay", "--list"]).await;
        assert_eq!(code, 75, "an alert is parked");
        assert!(listed.contains(&id), "replay --list shows it:\n{listed}");

        // Nothing more is tried: three times the schedule's only step.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let more = webhook.drain_failed();
        assert!(
            more.is_empty(),
            "{}: requests after the schedule was used up: {:?}",
            broker.name,
            event_ids(&more)
        );

        webhook.set_mode(Mode::Ok);
        let (code, out, err) = run_command(&setup, &["replay"]).await;
        assert_eq!(code, 0, "replay: {out}\n{err}");
        assert_eq!(webhook.delivered().await.body["eventId"], id);
        assert!(
            setup.parked_files().is_empty(),
            "{:?}",
            setup.parked_files()
        );
        consumer.kill().await;
    }
}

// ---------------------------------------------------------------- 6. Retry-After

/// `429` + `Retry-After: 1`, then `200`, with `maxAttempts: 1`: a pause, not a failed attempt,
/// so the alert is delivered, not parked.
#[tokio::test]
async fn retry_after_pauses_the_destination_instead_of_failing_the_alert() {
    for broker in testkit::brokers() {
        let mut webhook = Receiver::start().await;
        webhook.set_mode(Mode::ThrottleOnce);
        let setup = write_config(
            &broker,
            &Destinations {
                ..Destinations::one_webhook(webhook.url("hook"))
            },
        );
        let mut consumer = spawn_binary(&setup).await;
        let id = testkit::unique("throttled");
        publish(&broker, &setup.topic, failed(&id)).await;
        assert_eq!(webhook.delivered().await.body["eventId"], id);
        assert_eq!(webhook.throttled(), 1);
        let line = consumer.wait_for_line("pausing it for").await;
        assert!(line.contains("1s"), "{line}");
        consumer.wait_for_line("alert delivered").await;
        let log = consumer.kill().await;
        assert!(!log.contains("alert parked"), "{}: {log}", broker.name);
        assert!(setup.parked_files().is_empty());
    }
}

/// A destination that answers `429` with `Retry-After: 0` every time must not be re-sent to in
/// a tight loop: the pause is at least a second.
#[tokio::test]
async fn retry_after_zero_does_not_make_a_tight_loop() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&count);
    let app = axum::Router::new().fallback(move || {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            (
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                [("retry-after", "0")],
            )
        }
    });
    let addr = serve(app).await;
    let broker = testkit::embedded();
    let setup = write_config(
        &broker,
        &Destinations {
            hold_seconds: Some(1),
            ..Destinations::one_webhook(format!("http://{addr}/hook"))
        },
    );
    let mut running = start(&setup).await;
    publish(&broker, &setup.topic, failed(&testkit::unique("zero"))).await;
    let (_, outcomes) = alerted(running.handled().await);
    assert!(
        matches!(outcome_of(&outcomes, WEBHOOK), Outcome::Held { .. }),
        "{outcomes:?}"
    );
    let before = count.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = count.load(Ordering::SeqCst) - before;
    running.stop().await;
    assert!(
        before <= 3 && during <= 2,
        "Retry-After: 0 answered with {before} requests in the first second and {during} in \
         the next"
    );
}

// ---------------------------------------------------------------- 7. redelivery by one of many

/// Two consumers on Redis share the topic root and the dead-letter directory; the webhook is
/// down, then back. A third consumer, started while alerts are parked, finds them all at its
/// start and races the others for them. Every alert is delivered exactly once.
#[tokio::test]
async fn consumers_sharing_a_dead_letter_directory_redeliver_each_alert_once() {
    if skip_without_redis() {
        return;
    }
    const N: usize = 8;
    for broker in testkit::brokers() {
        let mut webhook = Receiver::failing().await;
        let shared = tempfile::tempdir().expect("shared dead-letter dir");
        let root = testkit::unique("qscloud-redeliver");
        // A shared subscription splits the events, so A and B each park some.
        let group = testkit::unique("group");
        let member = || {
            let mut setup = write_config(
                &broker,
                &Destinations {
                    topic_root: Some(root.clone()),
                    dead_letter_dir: Some(shared.path().to_owned()),
                    redelivery_schedule: Some(vec![1; 30]),
                    v5: true,
                    shared_group: Some(group.clone()),
                    ..Destinations::one_webhook(webhook.url("hook"))
                },
            );
            on_redis(&mut setup);
            setup
        };
        let (a_setup, b_setup, c_setup) = (member(), member(), member());
        let a = spawn_binary(&a_setup).await;
        let b = spawn_binary(&b_setup).await;
        let ids = burst_failed(&broker, &a_setup.topic, "shared", N).await;

        wait_until("every alert is parked", || {
            a_setup.parked_files().len() == N
        })
        .await;
        let mut c = spawn_binary(&c_setup).await;
        // C found every file at its start and probed one in vain: from now on all three probe
        // at the same second boundaries (the schedule counts Unix seconds), so once the
        // destination answers they drain the same files at the same time.
        wait_for_log(&mut c, &["destination is down"]).await;
        // Slow answers: a drain takes long enough for the others to reach the same files.
        webhook.set_delay(Duration::from_millis(150));
        webhook.set_mode(Mode::Ok);
        let mut tally: BTreeMap<String, usize> = BTreeMap::new();
        while ids.iter().any(|id| !tally.contains_key(id)) {
            let r = webhook.delivered().await;
            *tally
                .entry(r.body["eventId"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        wait_until("the shared dead-letter directory is empty", || {
            a_setup.parked_files().is_empty()
        })
        .await;
        // A duplicate would be an attempt already under way: give it time to arrive.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for r in webhook.drain_delivered() {
            *tally
                .entry(r.body["eventId"].as_str().unwrap_or("?").to_owned())
                .or_default() += 1;
        }
        let (a_log, b_log, c_log) = (a.kill().await, b.kill().await, c.kill().await);
        let redelivered = |log: &str| log.matches("parked alert redelivered").count();
        println!(
            "shared dead-letter directory ({}): {N} alerts redelivered by A {}, B {}, C {}",
            broker.name,
            redelivered(&a_log),
            redelivered(&b_log),
            redelivered(&c_log)
        );
        let logs = format!("A:\n{a_log}\nB:\n{b_log}\nC:\n{c_log}");
        let duplicates: Vec<(&String, &usize)> = tally.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            duplicates.is_empty(),
            "{}: delivered more than once: {duplicates:?}\n{logs}",
            broker.name
        );
        assert_eq!(tally.len(), N, "{}: {tally:?}", broker.name);
        assert!(!logs.contains("redelivered, but"), "{logs}");
    }
}

/// With Redis, a consumer restarted (same client id) while one of its alerts is held on disk
/// (the destination hung) redelivers it on the schedule once the destination answers: the
/// redelivery lease the stopped process took for it must not keep its successor waiting.
#[tokio::test]
async fn a_restarted_consumer_redelivers_what_it_held_before() {
    if skip_without_redis() {
        return;
    }
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    webhook.set_mode(Mode::Hang);
    let mut setup = write_config(
        &broker,
        &Destinations {
            webhook: Some(webhook.url("hook")),
            max_attempts: 10,
            hold_seconds: Some(1),
            webhook_timeout: Some(1),
            redelivery_schedule: Some(vec![1; 10]),
            ..Default::default()
        },
    );
    on_redis(&mut setup);
    let mut consumer = spawn_binary(&setup).await;
    let id = testkit::unique("restart");
    publish(&broker, &setup.topic, failed(&id)).await;
    webhook.hung().await;
    wait_for_log(&mut consumer, &[&format!("event {id:?}"), "held on disk"]).await;
    let testkit::process::Ended { code, log, .. } = consumer.terminate().await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(setup.parked_files().len(), 1, "held on disk at shutdown");

    webhook.set_mode(Mode::Ok);
    let again = spawn_binary(&setup).await;
    let deadline = Instant::now() + WAIT;
    let mut delivered = Vec::new();
    while delivered.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        delivered = webhook.drain_delivered();
    }
    let log = again.kill().await;
    assert_eq!(
        event_ids(&delivered),
        [id],
        "the held alert was not redelivered after the restart:\n{log}"
    );
    assert!(setup.parked_files().is_empty(), "{log}");
}

/// A parked alert that is due but leased by another consumer (it is redelivering it, or died
/// holding the lease) is not this consumer's to send; its new alerts must still go out at
/// once, not one per pause (`holdSeconds: 1` makes a wait visible: the alert would be held).
#[tokio::test]
async fn new_alerts_do_not_wait_behind_a_file_another_consumer_leased() {
    if skip_without_redis() {
        return;
    }
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    let mut setup = write_config(
        &broker,
        &Destinations {
            hold_seconds: Some(1),
            redelivery_schedule: Some(vec![1; 5]),
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    on_redis(&mut setup);
    // A parked alert of this destination, due now, leased by another consumer.
    let other = testkit::unique("leased");
    let alert = reload_alert(
        &other,
        &format!("app-{other}"),
        &reload_of(&other),
        serde_json::json!({}),
    );
    let dead_letter = DeadLetter::new(&setup.dead_letter_dir);
    let file = dead_letter
        .write(&consumer::delivery::ParkedAlert {
            version: 1,
            sink: WEBHOOK.into(),
            parked_at: "2026-01-01T00:00:00Z".into(),
            attempts: 1,
            error: "HTTP 503".into(),
            redeliveries: 0,
            next_attempt_at: Some(0),
            exhausted: false,
            alert,
        })
        .await
        .expect("park");
    let name = file.file_name().expect("file name").to_string_lossy();
    let lease = format!("qscloud-consumer:lease:redeliver:{name}");
    let client = redis::Client::open(REDIS).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let _: () = redis::cmd("SET")
        .arg(&lease)
        .arg("another-consumer")
        .arg("PX")
        .arg(60_000)
        .query_async(&mut redis)
        .await
        .expect("lease set");

    let mut running = start(&setup).await;
    let mut outcomes_seen = Vec::new();
    for _ in 0..4 {
        let id = testkit::unique("beside-leased");
        publish(&broker, &setup.topic, failed(&id)).await;
        let (_, outcomes) = alerted(running.handled().await);
        outcomes_seen.push(outcome_of(&outcomes, WEBHOOK).clone());
    }
    running.stop().await;
    let _: () = redis::cmd("DEL")
        .arg(&lease)
        .query_async(&mut redis)
        .await
        .expect("lease removed");
    assert!(
        outcomes_seen
            .iter()
            .all(|o| matches!(o, Outcome::Delivered { .. })),
        "new alerts waited behind a file leased by another consumer: {outcomes_seen:?}"
    );
    let sent = event_ids(&webhook.drain_delivered());
    assert!(!sent.contains(&other), "the leased file was sent: {sent:?}");
    assert!(file.exists(), "the leased file is left to its holder");
}

// ---------------------------------------------------------------- 8. the takeover

/// Qlik's two events for one failed reload reach two consumers. The first claims the reload
/// and reserves Slack's rate-limit window (`rateLimit: 300`), then dies (SIGKILL) while its
/// Slack POST hangs. The survivor takes the reload over when the claim's lease runs out and
/// must send the alert under the window the claim reserved, not drop it as rate-limited.
#[tokio::test]
async fn a_reload_taken_over_from_a_dead_consumer_is_still_alerted() {
    if skip_without_redis() {
        return;
    }
    for broker in testkit::brokers() {
        let mut slack = Receiver::start().await;
        slack.set_mode(Mode::Hang);
        let root = testkit::unique("qscloud-takeover");
        let member = || {
            let mut setup = write_config(
                &broker,
                &Destinations {
                    slack: Some(slack.url("services/T000/B000/takeover")),
                    max_attempts: 1,
                    topic_root: Some(root.clone()),
                    chat_rate_limit: 300,
                    // Not held before the kill: the claim stays open.
                    hold_seconds: Some(60),
                    ..Default::default()
                },
            );
            on_redis(&mut setup);
            setup
        };
        let (a_setup, b_setup) = (member(), member());
        let first = testkit::unique("takeover-app");
        let second = testkit::unique("takeover-reload");
        let reload = testkit::unique("reload");
        let app = testkit::unique("app");
        let mut a = spawn_binary(&a_setup).await;
        publish(
            &broker,
            &a_setup.topic,
            event_with_reload(Sample::CloudEventsAppReload, &first, TENANT, &app, &reload),
        )
        .await;
        slack.hung().await;
        wait_for_decision(&mut a, &first).await;
        let a_log = a.kill().await;

        slack.set_mode(Mode::Ok);
        let mut b = spawn_binary(&b_setup).await;
        publish(
            &broker,
            &b_setup.topic,
            event_with_reload(
                Sample::CloudEventsReloadFinished,
                &second,
                TENANT,
                &app,
                &reload,
            ),
        )
        .await;
        wait_for_decision(&mut b, &second).await;
        let line = wait_for_log_any(
            &mut b,
            &[&format!("event {second:?}"), "slack:"],
            &["alert delivered", "not sent, rate limit"],
        )
        .await;
        assert!(
            line.contains("alert delivered"),
            "{}: the survivor dropped the reload's alert as rate-limited: {line}\nA:\n{a_log}",
            broker.name
        );
        let alert = slack.delivered().await;
        let b_log = b.kill().await;
        assert!(!b_log.contains("rate limit"), "{}: {b_log}", broker.name);
        assert!(
            alert.path.contains("takeover"),
            "the alert went to Slack: {alert:?}"
        );
        assert!(
            log_lines_about(&b_log, &second)
                .iter()
                .any(|l| l.contains("reload failed, alerting")),
            "{b_log}"
        );
    }
}

/// `scheduleSeconds: []` (no automatic redelivery): an alert that failed is parked for
/// `replay`, but the destination must still be tried for the next alert: nothing would ever
/// probe it, so marking it down would park every later alert untried until a restart.
#[tokio::test]
async fn without_a_schedule_a_failure_does_not_shut_the_destination_for_good() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::failing().await;
    let setup = write_config(
        &broker,
        &Destinations {
            redelivery_schedule: Some(vec![]),
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    let mut running = start(&setup).await;
    let [one, two] = [testkit::unique("nosched1"), testkit::unique("nosched2")];
    publish(&broker, &setup.topic, failed(&one)).await;
    let (_, outcomes) = alerted(running.handled().await);
    assert!(
        matches!(outcome_of(&outcomes, WEBHOOK), Outcome::Parked { .. }),
        "{outcomes:?}"
    );
    webhook.set_mode(Mode::Ok);
    publish(&broker, &setup.topic, failed(&two)).await;
    let (_, outcomes) = alerted(running.handled().await);
    assert!(
        matches!(outcome_of(&outcomes, WEBHOOK), Outcome::Delivered { .. }),
        "the destination answers again, yet the next alert was not tried: {outcomes:?}"
    );
    assert_eq!(webhook.delivered().await.body["eventId"], two);
    let parked: Vec<String> = setup
        .parked_files()
        .iter()
        .map(|p| {
            read_json(p)["alert"]["eventId"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert_eq!(parked, [one], "the first waits for replay");
    running.stop().await;
}

/// A burst larger than the broker's window (Mosquitto sends 20 unacknowledged messages at most)
/// and than the client's request queue: every event gets through. An engine that waited for
/// each acknowledgement to be queued while the MQTT event loop waited for the engine to take
/// the next message stopped for good after about 20 messages (concurrency 1) or 130 (32).
#[tokio::test]
async fn a_burst_beyond_the_brokers_window_gets_through() {
    const N: usize = 120;
    for broker in testkit::brokers() {
        for concurrency in [1, 32] {
            let mut webhook = Receiver::start().await;
            let setup = write_config(
                &broker,
                &Destinations {
                    concurrency: Some(concurrency),
                    ..Destinations::one_webhook(webhook.url("hook"))
                },
            );
            let mut running = start(&setup).await;
            burst_failed(&broker, &setup.topic, &format!("window{concurrency}"), N).await;
            let mut handled = BTreeSet::new();
            for _ in 0..N {
                if let Handled::Alerted { alert, .. } = running.handled().await {
                    handled.insert(alert.event_id);
                }
            }
            assert_eq!(
                handled.len(),
                N,
                "{} concurrency {concurrency}: every event alerted",
                broker.name
            );
            let mut delivered = BTreeSet::new();
            while delivered.len() < N {
                delivered.insert(webhook.delivered().await.body["eventId"].to_string());
            }
            running.stop().await;
        }
    }
}
