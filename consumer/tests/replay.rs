//! `consumer replay` as an operator runs it: one run at a time, a destination still down is not
//! retried alert by alert.

mod common;

use std::path::PathBuf;

use common::*;
use consumer::alert::Alert;
use consumer::delivery::DeadLetter;

fn alert(event_id: &str) -> Alert {
    Alert {
        event_id: event_id.into(),
        event_type: "com.qlik.v1.app.reload.finished".into(),
        tenant_id: TENANT.into(),
        app_id: Some("app-1".into()),
        reload_id: Some(format!("reload-{event_id}")),
        event_time: None,
        app_tags: vec![],
        script_log: None,
        context: serde_json::json!({"appName": "Sales"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        recipient: None,
    }
}

/// Parks an alert for `sink` as the consumer would have, and returns its file.
async fn park(setup: &Setup, sink: &str, event_id: &str) -> PathBuf {
    DeadLetter::new(&setup.dead_letter_dir)
        .park(sink, &alert(event_id), 1, "HTTP 503 Service Unavailable")
        .await
        .expect("park")
}

fn parked_event_ids(setup: &Setup) -> Vec<String> {
    setup
        .parked_files()
        .iter()
        .filter_map(|p| DeadLetter::read(p).ok())
        .map(|p| p.alert.event_id)
        .collect()
}

#[tokio::test]
async fn a_second_replay_while_one_runs_exits_75_and_sends_nothing() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    let setup = webhook_only(&broker, &webhook.url("hook"));
    park(&setup, "webhook:ops", "event-1").await;

    // The first replay holds the lock while the destination keeps it waiting.
    webhook.set_mode(Mode::Hang);
    let mut first = tokio::process::Command::new(binary())
        .args(["replay", "--config"])
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("first replay starts");
    webhook.hung().await;

    // A destination that would take the alert: the second replay must still send nothing.
    webhook.set_mode(Mode::Ok);
    let (code, stdout, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 75, "{stdout}{stderr}");
    let lock = setup.dead_letter_dir.join(".lock");
    let pid = first.id().expect("first replay still runs");
    assert!(
        stderr.contains(&lock.display().to_string()) && stderr.contains(&format!("process {pid}")),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(webhook.drain_delivered().is_empty());
    assert_eq!(parked_event_ids(&setup), ["event-1"]);

    // Listing needs no lock.
    let (code, stdout, stderr) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("event-1"), "{stdout}");

    // Once the first one is gone (killed here: a crash releases the lock too), replay works.
    let _ = first.kill().await;
    let (code, _, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(webhook.delivered().await.body["eventId"], "event-1");
    assert!(setup.parked_files().is_empty());
}

#[tokio::test]
async fn a_destination_still_down_is_tried_once_and_its_other_alerts_left_for_later() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    webhook.set_mode(Mode::Fail);
    let setup = write_config(
        &broker,
        &Destinations {
            webhook: Some(webhook.url("hook")),
            max_attempts: 2,
            ..Default::default()
        },
    );
    for id in ["event-1", "event-2", "event-3"] {
        park(&setup, "webhook:ops", id).await;
    }
    // Another destination's alert in the same run is still delivered.
    park(&setup, "log", "event-4").await;

    let (code, stdout, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 75, "{stdout}{stderr}");
    // One alert with its two attempts, not three alerts with two each.
    assert_eq!(webhook.drain_failed().len(), 2, "{stderr}");
    assert!(
        stderr
            .contains("webhook:ops still failing: 2 more parked alert(s) left for a later replay"),
        "{stderr}"
    );
    assert!(
        stderr.contains("1 delivered, 1 still failing") && stderr.contains("2 not tried"),
        "{stderr}"
    );
    assert_eq!(
        parked_event_ids(&setup),
        ["event-1", "event-2", "event-3"],
        "{stderr}"
    );
    // The alert tried counts its new attempts; the ones skipped were not touched.
    let attempts: Vec<u32> = setup
        .parked_files()
        .iter()
        .filter_map(|p| DeadLetter::read(p).ok())
        .map(|p| p.attempts)
        .collect();
    assert_eq!(attempts, [3, 1, 1]);

    // Back up: everything goes out.
    webhook.set_mode(Mode::Ok);
    let (code, _, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(webhook.drain_delivered().len(), 3);
    assert!(setup.parked_files().is_empty());
}
