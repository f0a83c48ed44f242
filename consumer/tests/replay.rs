//! `consumer replay` as an operator runs it: one run at a time, a destination still down is not
//! retried alert by alert, a file that cannot be removed does not end the run, its own MQTT
//! client id, and temporary files left by a crash are shown and cleaned up.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use bytes::Bytes;
use consumer::alert::Alert;
use consumer::delivery::DeadLetter;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use serde_json::Value;
use support::*;

fn alert(event_id: &str) -> Alert {
    reload_alert(
        event_id,
        "app-1",
        &reload_of(event_id),
        serde_json::json!({"appName": "Sales"}),
    )
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

    // Listing needs no lock (75: an alert is parked).
    let (code, stdout, stderr) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 75, "{stderr}");
    assert!(stdout.contains("event-1"), "{stdout}");

    // Once the first one is gone (killed here: a crash releases the lock too), replay works.
    let _ = first.kill().await;
    let (code, _, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(webhook.delivered().await.body["eventId"], "event-1");
    assert!(setup.parked_files().is_empty());
}

/// `replay --list` as a monitoring script uses it: the exit code alone says whether an alert
/// is parked (75) or none is (0), for all destinations or the one `--sink` names.
#[tokio::test]
async fn replay_list_exits_75_while_an_alert_is_parked_and_0_when_none_is() {
    let broker = testkit::embedded();
    let webhook = Receiver::start().await;
    let setup = webhook_only(&broker, &webhook.url("hook"));
    let (code, _, stderr) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("0 parked alert(s)"), "{stderr}");

    park(&setup, "webhook:ops", "event-1").await;
    let (code, stdout, stderr) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 75, "{stdout}{stderr}");
    assert!(
        stdout.contains("event-1") && stderr.contains("1 parked alert(s)"),
        "{stdout}{stderr}"
    );
    let (code, _, stderr) =
        run_command(&setup, &["replay", "--list", "--sink", "webhook:ops"]).await;
    assert_eq!(code, 75, "{stderr}");
    let (code, _, stderr) = run_command(&setup, &["replay", "--list", "--sink", "log"]).await;
    assert_eq!(code, 0, "nothing parked for log: {stderr}");
    // Listing sent nothing and kept the file.
    assert_eq!(webhook.requests(), 0);
    assert_eq!(parked_event_ids(&setup), ["event-1"]);

    // A file that cannot be read is something to look at too.
    let unreadable = setup
        .dead_letter_dir
        .join("t__e__log-0123456789abcdef.json");
    std::fs::write(&unreadable, b"not json").expect("write");
    let (code, _, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 75, "the unreadable file is left: {stderr}");
    assert_eq!(parked_event_ids(&setup), Vec::<String>::new());
    let (code, stdout, _) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 75, "{stdout}");
    std::fs::remove_file(&unreadable).expect("remove");
    let (code, _, stderr) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 0, "delivered and nothing left: {stderr}");
}

#[tokio::test]
async fn a_destination_still_down_is_tried_once_and_its_other_alerts_left_for_later() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::failing().await;
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

/// How a scripted destination answers an alert, given its event id.
type Answer = Arc<dyn Fn(&str) -> StatusCode + Send + Sync>;

/// A destination that answers each alert as `answer` says.
async fn scripted_receiver(
    answer: impl Fn(&str) -> StatusCode + Send + Sync + 'static,
) -> std::net::SocketAddr {
    async fn receive(State(answer): State<Answer>, body: Bytes) -> StatusCode {
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        answer(body["eventId"].as_str().unwrap_or_default())
    }
    let answer: Answer = Arc::new(answer);
    let app = axum::Router::new().fallback(receive).with_state(answer);
    serve(app).await
}

/// Puts a directory where a parked file was: removing or rewriting that path fails, whoever
/// runs the test (root included).
fn make_unwritable(path: &Path) {
    std::fs::remove_file(path).expect("remove parked file");
    std::fs::create_dir(path).expect("directory in its place");
    std::fs::write(path.join("keep"), b"x").expect("non-empty");
}

#[tokio::test]
async fn files_that_cannot_be_removed_or_rewritten_are_reported_and_the_run_goes_on() {
    let broker = testkit::embedded();
    let paths: Arc<std::sync::Mutex<Vec<(String, PathBuf)>>> = Arc::default();
    let known = Arc::clone(&paths);
    let addr = scripted_receiver(move |event_id| {
        let path = known.lock().ok().and_then(|p| {
            p.iter()
                .find(|(id, _)| id == event_id)
                .map(|(_, p)| p.clone())
        });
        match event_id {
            // Delivered, but its file cannot be removed afterwards.
            "event-a" => {
                if let Some(path) = path {
                    make_unwritable(&path);
                }
                StatusCode::OK
            }
            // Refused for good (not a destination that is down), and its file cannot be
            // rewritten with the new attempt count.
            "event-b" => {
                if let Some(path) = path {
                    make_unwritable(&path);
                }
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::OK,
        }
    })
    .await;
    let setup = webhook_only(&broker, &format!("http://{addr}/hook"));
    for id in ["event-a", "event-b", "event-c"] {
        let path = park(&setup, "webhook:ops", id).await;
        paths.lock().expect("paths").push((id.to_owned(), path));
    }

    let (code, stdout, stderr) = run_command(&setup, &["replay"]).await;
    // Exit 1: the directory needs a person (another run would send event-a again).
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stderr.contains("replay: 2 delivered, 1 still failing, 0 for unknown sinks, 0 unreadable")
            && stderr.contains("1 delivered but not removed")
            && stderr.contains("1 still failing and not updated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("delivered, but its file remains"),
        "{stderr}"
    );
    // The alert after them was delivered and its file removed.
    let c = paths.lock().expect("paths")[2].1.clone();
    assert!(!c.exists(), "{stderr}");
}

#[tokio::test]
async fn replay_connects_with_its_own_mqtt_client_id() {
    // Mosquitto, as most brokers, drops the older connection of a client id; the embedded
    // broker does not, so it cannot tell.
    let Some(broker) = testkit::mosquitto() else {
        eprintln!("Mosquitto not answering on 127.0.0.1:1883: skipped");
        return;
    };
    let topic = testkit::unique("qscloud-alerts");
    let setup = write_config(
        &broker,
        &Destinations {
            mqtt_topic: Some(format!("{topic}/alerts")),
            ..Default::default()
        },
    );
    park(&setup, "mqtt", "event-1").await;

    // The running consumer's publishing connection, as `consumer run` opens it.
    let mut options = MqttOptions::new(
        format!("{}-alerts", setup.client_id),
        &broker.host,
        broker.port,
    );
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe(format!("{topic}/#"), QoS::AtLeastOnce)
        .await
        .expect("subscribe queued");
    let subscribed = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::SubAck(_))) => return,
                Ok(_) => {}
                Err(e) => panic!("connecting: {e}"),
            }
        }
    };
    tokio::time::timeout(WAIT, subscribed)
        .await
        .expect("subscribed");

    let replay = tokio::spawn({
        let butler = setup.butler.clone();
        let extensions = setup.extensions.clone();
        async move {
            tokio::process::Command::new(binary())
                .args(["replay", "--config"])
                .arg(butler)
                .arg("--extensions")
                .arg(extensions)
                .output()
                .await
                .expect("replay runs")
        }
    });
    // The alert arrives, and the connection that was there first stays up.
    let received = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => return Ok(p.payload),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    let payload = tokio::time::timeout(WAIT, received)
        .await
        .expect("an alert or a disconnect")
        .unwrap_or_else(|e| panic!("replay took over the running consumer's connection: {e}"));
    let payload: Value = serde_json::from_slice(&payload).expect("JSON alert");
    assert_eq!(payload["eventId"], "event-1");
    let output = replay.await.expect("replay task");
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = client.disconnect().await;
}

fn age(path: &Path, by: Duration) {
    let file = std::fs::File::options()
        .write(true)
        .open(path)
        .expect("open");
    file.set_modified(SystemTime::now() - by)
        .expect("set modification time");
}

#[tokio::test]
async fn leftover_temporary_files_are_listed_and_replay_removes_the_old_ones() {
    let broker = testkit::embedded();
    let webhook = Receiver::start().await;
    let setup = webhook_only(&broker, &webhook.url("hook"));
    let parked = park(&setup, "webhook:ops", "event-1").await;
    let name = parked
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .expect("file name");
    let messages = setup.dead_letter_dir.join("messages");
    std::fs::create_dir_all(&messages).expect("messages dir");
    // Left by a crash two minutes ago, beside an alert and beside raw messages; and one being
    // written right now, which replay must not touch.
    let old = setup.dead_letter_dir.join(format!(".{name}.4242.tmp"));
    let old_message = messages.join(".message-0123456789abcdef.json.4242.tmp");
    let fresh = setup
        .dead_letter_dir
        .join(".t__e__log-0123456789abcdef.json.4343.tmp");
    for path in [&old, &old_message, &fresh] {
        std::fs::write(path, b"{\"version\":").expect("write");
    }
    age(&old, Duration::from_secs(120));
    age(&old_message, Duration::from_secs(120));

    let (code, stdout, stderr) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 75, "event-1 is parked: {stderr}");
    for path in [&old, &old_message, &fresh] {
        let line = stdout
            .lines()
            .find(|l| l.contains(&path.display().to_string()))
            .unwrap_or_else(|| panic!("{} not listed: {stdout}", path.display()));
        assert!(
            line.contains("temporary") && line.contains("crash"),
            "{line}"
        );
    }
    assert!(stderr.contains("3 leftover temporary file(s)"), "{stderr}");

    let (code, _, stderr) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(!old.exists() && !old_message.exists(), "{stderr}");
    assert!(fresh.exists(), "a write in progress is left alone");
    assert!(
        stderr.contains(&format!("removed {}", old.display()))
            && stderr.contains("2 leftover temporary file(s) removed"),
        "{stderr}"
    );
    assert!(setup.parked_files().is_empty());
}
