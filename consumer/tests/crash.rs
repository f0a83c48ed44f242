//! The real binary, killed (SIGKILL) while an alert is being delivered, has not acknowledged
//! the message: the broker delivers it again to the next run, which alerts exactly once.

mod support;

use std::time::Duration;
use support::*;

#[tokio::test]
async fn killed_before_acknowledging_gets_the_event_again_and_alerts_once() {
    for broker in testkit::brokers()
        .into_iter()
        .filter(|b| b.persistent_sessions)
    {
        let mut webhook = Receiver::start().await;
        let setup = webhook_only(&broker, &webhook.url("hook"));
        // The destination takes the request and never answers: the consumer is mid-delivery.
        webhook.set_mode(Mode::Hang);
        let first = spawn_binary(&setup).await;
        let id = testkit::unique("crash");
        let app = testkit::unique("app");
        publish_event(&broker, &setup, Sample::CloudEventsAppReload, &id, &app).await;
        let hung = webhook.hung().await;
        assert_eq!(hung.body["eventId"], id.as_str(), "{}", broker.name);
        let log = first.kill().await;
        assert!(
            !log.lines()
                .any(|l| l.contains("alert delivered") && l.contains("webhook:ops")),
            "{log}"
        );

        // Next run: the broker redelivers the unacknowledged event; the alert goes out once.
        webhook.set_mode(Mode::Ok);
        let mut second = spawn_binary(&setup).await;
        let got = webhook.delivered().await;
        assert_eq!(got.body["eventId"], id.as_str(), "{}", broker.name);
        let line = second.wait_for_line("sink=\"webhook:ops\"").await;
        assert!(line.contains("alert delivered"), "{line}");

        // A later event proves the queue moved on, and the first one did not come again.
        let marker = testkit::unique("marker");
        publish_event(&broker, &setup, Sample::Legacy, &marker, &app).await;
        let got = webhook.delivered().await;
        assert_eq!(got.body["eventId"], marker.as_str(), "{}", broker.name);
        assert!(webhook.drain_delivered().is_empty());
        let log = second.kill().await;
        assert!(!log.contains("eyJhbGciOiJFUzM4NCJ9"), "JWT never logged");
        assert!(
            !log.contains("webhook-header-secret"),
            "header secret never logged"
        );
    }
}

/// Issue 9: the rate-limit window starts once the alert was delivered (or parked), not before.
/// A consumer killed mid-delivery used to find the window taken when the broker sent the event
/// again, and dropped the alert as rate-limited.
#[tokio::test]
async fn killed_mid_delivery_under_a_rate_limit_still_alerts_after_restart() {
    let broker = testkit::embedded();
    let mut slack = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/T000/B000/slack-token")),
            chat_rate_limit: 3600,
            max_attempts: 1,
            ..Default::default()
        },
    );
    slack.set_mode(Mode::Hang);
    let first = spawn_binary(&setup).await;
    let id = testkit::unique("crash");
    let app = testkit::unique("app");
    publish_event(&broker, &setup, Sample::CloudEventsAppReload, &id, &app).await;
    slack.hung().await;
    first.kill().await;

    slack.set_mode(Mode::Ok);
    let mut second = spawn_binary(&setup).await;
    slack.delivered().await;
    let line = second
        .wait_for_line(&format!("sink=\"slack:{TENANT}\""))
        .await;
    assert!(line.contains("alert delivered"), "{line}");
    // The window is taken now: a second failed reload of the app within the hour is dropped.
    let again = testkit::unique("crash");
    publish_event(&broker, &setup, Sample::CloudEventsAppReload, &again, &app).await;
    second.wait_for_line("not sent, rate limit").await;
    assert!(slack.drain_delivered().is_empty());
    second.kill().await;
}

/// Issue 9: SIGTERM while an alert is stuck at a destination ends the process within
/// `shutdownGraceSeconds` (plus the disconnect), and nothing is lost: the message in hand was
/// left unacknowledged, so the next run gets it again and delivers it.
#[tokio::test]
async fn sigterm_with_a_stuck_destination_ends_within_the_grace_and_loses_nothing() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            shutdown_grace: Some(1),
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    webhook.set_mode(Mode::Hang);
    let first = spawn_binary(&setup).await;
    let id = testkit::unique("term");
    publish_event(
        &broker,
        &setup,
        Sample::CloudEventsAppReload,
        &id,
        "app-term",
    )
    .await;
    webhook.hung().await;
    let testkit::process::Ended { took, code, log } = first.terminate().await;
    assert!(took < Duration::from_secs(5), "took {took:?}; log:\n{log}");
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("left unacknowledged"), "{log}");

    webhook.set_mode(Mode::Ok);
    let mut second = spawn_binary(&setup).await;
    let got = webhook.delivered().await;
    assert_eq!(got.body["eventId"], id.as_str());
    second.wait_for_line("alert delivered").await;
    second.kill().await;
}

/// Issue 9: a poison message — `durationSeconds: 1e300` for a reload the tenant API does not
/// know, so the start time comes from the event — used to panic the consumer on every start.
/// It now alerts (without a stop time) and the alerts queued behind it go out.
#[tokio::test]
async fn a_poison_message_does_not_stop_the_alerts_behind_it() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    let setup = webhook_only(&broker, &webhook.url("hook"));
    let mut consumer = spawn_binary(&setup).await;
    let poison = testkit::unique("poison");
    let body = event(Sample::CloudEventsReloadFinished, &poison, TENANT, "app-p");
    let body = String::from_utf8(body)
        .expect("utf8")
        .replace("\"durationSeconds\":13", "\"durationSeconds\":1e300");
    assert!(body.contains("1e300"));
    publish(&broker, &setup.topic, body.into_bytes()).await;
    let next = testkit::unique("behind");
    publish_event(&broker, &setup, Sample::Legacy, &next, "app-n").await;
    // Handled concurrently: both arrive, in either order.
    let mut got = vec![
        webhook.delivered().await.body["eventId"].to_string(),
        webhook.delivered().await.body["eventId"].to_string(),
    ];
    got.sort();
    let mut want = vec![format!("{poison:?}"), format!("{next:?}")];
    want.sort();
    assert_eq!(got, want);
    let log = consumer.wait_for_line("alert delivered").await;
    assert!(!log.contains("panicked"), "{log}");
    consumer.kill().await;
}
