//! `consumer session create|status` and the first events of a new consumer, with the real
//! binary on every test broker: the broker keeps events only for a session that exists, so an
//! event published before the consumer's first connection is lost unless `session create` ran
//! first; `status` reports without creating a session; `webhook create` says which it is.

mod support;

use std::process::Stdio;
use std::time::Duration;

use support::fake_webhooks::FakeWebhooks;
use support::*;

const SECRET: &str = "wh-secret-0123456789abcdefghijklmnopqrstuv";

/// `consumer session <what>` for `setup`: (exit code, stdout, stderr).
async fn session(setup: &Setup, what: &str) -> (i32, String, String) {
    run_command(setup, &["session", what]).await
}

#[track_caller]
fn assert_exit(result: &(i32, String, String), code: i32) {
    assert_eq!(
        result.0, code,
        "stdout:\n{}\nstderr:\n{}",
        result.1, result.2
    );
}

#[tokio::test]
async fn session_create_keeps_the_events_published_before_the_first_run() {
    for broker in testkit::brokers() {
        for v5 in [false, true] {
            let shared = v5 && redis_answers(6379);
            let setup = write_config(
                &broker,
                &Destinations {
                    max_attempts: 1,
                    v5,
                    // A shared group needs a shared store (check-config refuses it with
                    // files); without a Redis here, MQTT 5 is covered without the group.
                    shared_group: shared.then(|| testkit::unique("group")),
                    state_store: shared.then(|| "redis://127.0.0.1:6379/0".to_owned()),
                    ..Default::default()
                },
            );
            let what = format!("{} MQTT {}", broker.name, if v5 { "5" } else { "3.1.1" });

            // Asked twice: the first look must not have left a session behind.
            for _ in 0..2 {
                let status = session(&setup, "status").await;
                assert_exit(&status, 66);
                assert!(
                    status.1.contains(&format!(
                        "no session on the broker for client id {}",
                        setup.client_id
                    )),
                    "{what}: {status:?}"
                );
            }

            let created = session(&setup, "create").await;
            assert_exit(&created, 0);
            let out = &created.1;
            assert!(
                out.contains("session created") && out.contains("there was none"),
                "{what}: {out}"
            );
            assert!(
                out.contains(&format!("client id:    {}", setup.client_id)),
                "{out}"
            );
            if v5 {
                if shared {
                    assert!(out.contains("subscription: $share/"), "{what}: {out}");
                }
                assert!(out.contains("expiry:       3600s"), "{what}: {out}");
            } else {
                assert!(
                    out.contains("/#' (QoS 1)") || out.contains("/# (QoS 1)"),
                    "{what}: {out}"
                );
            }

            let status = session(&setup, "status").await;
            assert_exit(&status, 0);
            assert!(status.1.contains("session present"), "{what}: {status:?}");
            let again = session(&setup, "create").await;
            assert_exit(&again, 0);
            assert!(
                again.1.contains("session already present"),
                "{what}: {again:?}"
            );

            // No consumer runs: the broker keeps the event for the session.
            let id = testkit::unique("before-first-run");
            publish_event(&broker, &setup, Sample::CloudEventsAppReload, &id, "app-1").await;
            let mut consumer = spawn_binary(&setup).await;
            wait_for_decision(&mut consumer, &id).await;
            let ended = consumer.terminate().await;
            assert!(
                !ended.log.contains("the broker had no session"),
                "{what}: {}",
                ended.log
            );
        }
    }
}

#[tokio::test]
async fn without_a_session_the_first_event_is_lost_and_run_says_so() {
    for broker in testkit::brokers() {
        let setup = write_config(&broker, &Destinations::default());
        let lost = testkit::unique("lost");
        publish_event(
            &broker,
            &setup,
            Sample::CloudEventsAppReload,
            &lost,
            "app-1",
        )
        .await;

        let mut consumer = spawn_binary(&setup).await;
        let warning = consumer
            .wait_for_line(&format!(
                "the broker had no session for client id {}",
                setup.client_id
            ))
            .await;
        assert!(
            warning.contains("events published before now were not kept"),
            "{warning}"
        );
        assert!(warning.contains("consumer session create"), "{warning}");
        // Set explicitly in the test configuration, so no advice about the hostname.
        assert!(!warning.contains("hostname"), "{warning}");

        // Working, and the event from before its session never arrives.
        let later = testkit::unique("later");
        publish_event(
            &broker,
            &setup,
            Sample::CloudEventsAppReload,
            &later,
            "app-1",
        )
        .await;
        wait_for_decision(&mut consumer, &later).await;
        let ended = consumer.terminate().await;
        assert!(!ended.log.contains(&lost), "{}: {}", broker.name, ended.log);
    }
}

/// `consumer webhook create` for `setup` against the fake webhooks API.
async fn webhook_create(setup: &Setup, url: &str) -> (i32, String, String) {
    let output = tokio::process::Command::new(binary())
        .args(["webhook", "create", "--name", "relay", "--url", url])
        .arg("--config")
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .env("WEBHOOK_SECRET", SECRET)
        .env("NO_COLOR", "1")
        .env_remove("QLIK_TENANT_JWT")
        .stdin(Stdio::null())
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), output)
        .await
        .expect("webhook create finishes")
        .expect("consumer runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn webhook_create_says_whether_the_session_exists_and_creates_none() {
    for broker in testkit::brokers() {
        let api = FakeWebhooks::start().await;
        let setup = write_config(
            &broker,
            &Destinations {
                tenant_url: Some(api.url()),
                jwt: Some(api.jwt()),
                ..Default::default()
            },
        );
        let url = "https://relay.example.com/";

        let first = webhook_create(&setup, url).await;
        assert_exit(&first, 0);
        assert!(
            first.2.contains(&format!(
                "warning: the broker holds no session for the consumer's client id {}",
                setup.client_id
            )) && first.2.contains("consumer session create"),
            "{}: {}",
            broker.name,
            first.2
        );
        assert_exit(&session(&setup, "status").await, 66);

        assert_exit(&session(&setup, "create").await, 0);
        let second = webhook_create(&setup, url).await;
        assert_exit(&second, 0);
        assert!(
            second
                .2
                .contains("the broker holds the session of client id"),
            "{}: {}",
            broker.name,
            second.2
        );
        assert!(
            second.2.contains("0 webhook(s) created, 2 already there"),
            "{}",
            second.2
        );
        assert_eq!(api.webhooks().len(), 2);
    }
}

#[tokio::test]
async fn a_running_consumer_is_reported_from_its_healthz_without_taking_its_connection() {
    let broker = testkit::embedded();
    let mut setup = write_config(&broker, &Destinations::default());
    let port = free_port();
    setup.edit(|config| {
        config.consumer("metrics.listen", format!("127.0.0.1:{port}"));
    });
    let consumer = spawn_binary(&setup).await;
    for what in ["status", "create"] {
        let result = session(&setup, what).await;
        assert_exit(&result, 0);
        assert!(
            result.1.contains("consumer running and subscribed"),
            "{result:?}"
        );
    }
    let ended = consumer.terminate().await;
    // One connection from start to end: nobody took it over.
    assert_eq!(
        ended.log.matches("connected to MQTT broker").count(),
        1,
        "{}",
        ended.log
    );
}

#[tokio::test]
async fn an_unreachable_broker_and_a_clean_session_have_their_own_exit_codes() {
    let broker = testkit::TestBroker {
        port: free_port(),
        ..testkit::embedded()
    };
    let setup = write_config(&broker, &Destinations::default());
    for what in ["status", "create"] {
        let result = session(&setup, what).await;
        assert_exit(&result, 69);
        assert!(
            result.2.contains("cannot reach the MQTT broker"),
            "{result:?}"
        );
    }

    let mut setup = write_config(&testkit::embedded(), &Destinations::default());
    setup.edit(|config| {
        config.extension(
            "mqttConfig.qlikSenseCloud.event.mqttForward.broker.cleanSession",
            true,
        );
    });
    let result = session(&setup, "create").await;
    assert_exit(&result, 78);
    assert!(
        result.2.contains("broker.cleanSession is true"),
        "{result:?}"
    );
}

#[tokio::test]
async fn the_warning_of_a_consumer_with_the_hostname_client_id_asks_for_a_fixed_one() {
    let broker = testkit::embedded();
    let mut setup = write_config(&broker, &Destinations::default());
    // No clientId: the default, derived from the hostname, which the test sets.
    setup.edit(|config| {
        config.extension(
            "mqttConfig.qlikSenseCloud.event.mqttForward.broker",
            serde_json::json!({"tls": false}),
        );
    });
    let host = testkit::unique("host");
    let client_id = format!("qscloud-consumer-{host}");

    let mut command = run_command_for(&setup);
    command.env("HOSTNAME", &host);
    let mut consumer = Binary::spawn(command);
    let warning = consumer
        .wait_for_line(&format!(
            "the broker had no session for client id {client_id}"
        ))
        .await;
    assert!(
        warning.contains("derived from the hostname") && warning.contains("fixed broker.clientId"),
        "{warning}"
    );
    consumer.wait_for_line("subscribed with QoS 1").await;
    consumer.terminate().await;

    // The session commands use the same client id, and find the session `run` left.
    let output = tokio::process::Command::new(binary())
        .args(["session", "status", "--config"])
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .env("HOSTNAME", &host)
        .output()
        .await
        .expect("consumer runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "session present on the broker for client id {client_id}"
        )),
        "{stdout}"
    );
}
