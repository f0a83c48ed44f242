//! The pipeline end to end against every test broker: envelopes in, one alert per sink out;
//! other tenants, duplicates and successes produce nothing; events published while the
//! consumer is stopped arrive when it starts; a destination that is down gets the alert parked.

mod support;

use std::time::Duration;

use consumer::delivery::Outcome;
use consumer::transforms::Handled;
use support::*;

/// Expected identity of each sample's alert.
struct Expect {
    event_id: String,
    app_id: String,
    reload_id: String,
    error_message: &'static str,
    event_time: &'static str,
}

fn expectation(sample: Sample, event_id: &str, app_id: &str) -> Expect {
    let (error_message, event_time) = match sample {
        Sample::Legacy => ("Field 'Amount' not found", "2026-09-14T11-31-39"),
        Sample::Hybrid | Sample::CloudEventsAppReload => {
            ("Field 'Amount' not found", "2026-11-30T07-06-22")
        }
        Sample::CloudEventsReloadFinished => {
            ("The reload failed: script error", "2026-11-30T07-06-25")
        }
    };
    Expect {
        event_id: event_id.to_owned(),
        app_id: app_id.to_owned(),
        reload_id: reload_of(event_id),
        error_message,
        event_time,
    }
}

#[tokio::test]
async fn failed_reload_in_every_envelope_alerts_once_per_sink() {
    for broker in testkit::brokers() {
        let mut slack = Receiver::start().await;
        let mut teams = Receiver::start().await;
        let mut webhook = Receiver::start().await;
        let alert_root = testkit::unique("alerts");
        let mut alerts = testkit::Subscriber::connect(&broker, &format!("{alert_root}/#")).await;
        let setup = write_config(
            &broker,
            &Destinations {
                slack: Some(slack.url("services/T000/B000/slack-token")),
                slack_formatted: true,
                teams: Some(teams.url("webhookb2/teams-token")),
                teams_formatted: false,
                webhook: Some(webhook.url("hooks/qlik")),
                mqtt_topic: Some(format!("{alert_root}/{{tenantId}}/{{appId}}")),
                script_log: true,
                max_attempts: 2,
                ..Default::default()
            },
        );
        let mut consumer = start(&setup).await;

        let mut expected = Vec::new();
        for sample in ALL_SAMPLES {
            let event_id = testkit::unique("event");
            let app_id = testkit::unique("app");
            publish(
                &broker,
                &setup.topic,
                event(sample, &event_id, TENANT, &app_id),
            )
            .await;
            expected.push((sample, expectation(sample, &event_id, &app_id)));
        }

        for (sample, want) in &expected {
            let (alert, outcomes) = alerted(consumer.handled().await);
            let context = format!("{} {sample:?}", broker.name);
            assert_eq!(alert.event_id, want.event_id, "{context}");
            assert_eq!(alert.tenant_id, TENANT, "{context}");
            assert_eq!(
                alert.app_id.as_deref(),
                Some(want.app_id.as_str()),
                "{context}"
            );
            assert_eq!(
                alert.reload_id.as_deref(),
                Some(want.reload_id.as_str()),
                "{context}"
            );
            let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "log",
                    "script-log-disk",
                    &format!("teams:{TENANT}"),
                    &format!("slack:{TENANT}"),
                    "webhook:ops",
                    "mqtt"
                ],
                "{context}"
            );
            assert!(
                outcomes
                    .iter()
                    .all(|(_, o)| matches!(o, Outcome::Delivered { attempts: 1 })),
                "{context}: {outcomes:?}"
            );

            // Slack: the shipped formatted template, rendered with the alert's fields.
            let got = slack.delivered().await;
            assert_eq!(got.path, "/services/T000/B000/slack-token");
            let text = got.body.to_string();
            assert!(text.contains(&want.app_id), "{context}: {text}");
            assert!(text.contains(&want.reload_id), "{context}: {text}");
            assert!(text.contains(want.error_message), "{context}: {text}");
            assert_eq!(got.body["channel"], "sense-failures");
            assert_eq!(got.body["username"], "Qlik Sense");
            assert_eq!(got.body["icon_emoji"], ":ghost:");

            // Teams: the basic Adaptive Card with the rendered basicMsgTemplate.
            let got = teams.delivered().await;
            let card = &got.body["attachments"][0]["content"];
            assert_eq!(card["type"], "AdaptiveCard", "{context}");
            let heading = card["body"][0]["text"].as_str().unwrap_or_default();
            assert!(
                heading.starts_with("Qlik Cloud app reload failed: \""),
                "{heading}"
            );
            let app_url = format!("/sense/app/{}", want.app_id);
            assert!(got.body.to_string().contains(&app_url), "{context}");

            // Webhook: the JSON context with Butler's field names and the event ids.
            let got = webhook.delivered().await;
            assert_eq!(got.body["eventId"], want.event_id.as_str(), "{context}");
            assert_eq!(got.body["tenantId"], TENANT);
            assert_eq!(got.body["appId"], want.app_id.as_str());
            assert_eq!(got.body["reloadId"], want.reload_id.as_str());
            assert_eq!(got.body["errorMessage"], want.error_message);
            assert_eq!(
                got.body["appUrl"].as_str().map(|u| u.ends_with(&app_url)),
                Some(true)
            );
            let key = consumer::sinks::webhook::idempotency_key_for(TENANT, &want.event_id);
            assert_eq!(got.idempotency_key.as_deref(), Some(key.as_str()));

            // MQTT: re-published on the configured topic.
            let (topic, payload) = alerts.next(WAIT).await.expect("alert on MQTT");
            assert_eq!(topic, format!("{alert_root}/{TENANT}/{}", want.app_id));
            let payload: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            assert_eq!(payload["eventId"], want.event_id.as_str());

            // Script log on disk, with Butler's path scheme.
            let day = &want.event_time[..10];
            let file = setup.script_log_dir.join(day).join(format!(
                "{}_appId={}_reloadId={}.log",
                want.event_time, want.app_id, want.reload_id
            ));
            let content = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{context}: {}: {e}", file.display()));
            assert!(content.contains(&want.reload_id), "{content}");
            assert!(content.contains(want.error_message), "{content}");
        }
        consumer.stop().await;
        // Exactly one per sink and event: nothing further arrived.
        assert!(slack.drain_delivered().is_empty());
        assert!(teams.drain_delivered().is_empty());
        assert!(webhook.drain_delivered().is_empty());
        assert!(alerts.next(Duration::from_millis(200)).await.is_none());
    }
}

#[tokio::test]
async fn other_tenants_duplicates_and_successes_produce_no_alert() {
    for broker in testkit::brokers() {
        let mut webhook = Receiver::start().await;
        let setup = webhook_only(&broker, &webhook.url("hook"));
        let mut consumer = start(&setup).await;
        let app = testkit::unique("app");
        let failed_id = testkit::unique("event");
        let other_id = testkit::unique("event");
        let ok_id = testkit::unique("event");
        // All on one topic: MQTT keeps the order of one publisher's messages on one topic.
        let messages = [
            event(Sample::CloudEventsAppReload, &other_id, OTHER_TENANT, &app),
            event(Sample::Legacy, &failed_id, TENANT, &app),
            event(Sample::Legacy, &failed_id, TENANT, &app),
            succeeded_event(&ok_id, &app),
            b"{not json".to_vec(),
        ];
        for message in messages {
            publish(&broker, &setup.topic, message).await;
        }
        assert_eq!(
            consumer.handled().await,
            Handled::UnknownTenant {
                event_id: other_id.clone(),
                tenant_id: OTHER_TENANT.into()
            },
            "{}",
            broker.name
        );
        let (alert, _) = alerted(consumer.handled().await);
        assert_eq!(alert.event_id, failed_id);
        assert_eq!(
            consumer.handled().await,
            Handled::Duplicate {
                tenant_id: TENANT.to_owned(),
                event_id: failed_id.clone()
            }
        );
        assert!(
            matches!(consumer.handled().await, Handled::NoAlert { event_id, .. } if event_id == ok_id)
        );
        assert!(matches!(
            consumer.handled().await,
            Handled::Unparseable { .. }
        ));
        // Every message above was handled and acknowledged; the sink saw exactly one alert.
        let got = webhook.delivered().await;
        assert_eq!(got.body["eventId"], failed_id.as_str());
        assert!(webhook.drain_delivered().is_empty(), "{}", broker.name);
        consumer.stop().await;

        // The memory of handled events survives a restart: a Qlik retry days later is dropped.
        let mut consumer = start(&setup).await;
        publish(
            &broker,
            &setup.topic,
            event(Sample::Legacy, &failed_id, TENANT, &app),
        )
        .await;
        assert_eq!(
            consumer.handled().await,
            Handled::Duplicate {
                tenant_id: TENANT.to_owned(),
                event_id: failed_id.clone()
            }
        );
        assert!(webhook.drain_delivered().is_empty());
        consumer.stop().await;
    }
}

#[tokio::test]
async fn events_published_while_stopped_are_delivered_on_start() {
    for broker in testkit::brokers()
        .into_iter()
        .filter(|b| b.persistent_sessions)
    {
        // MQTT 3.1.1 keeps the session with clean session off, MQTT 5 with a session expiry.
        for v5 in [false, true] {
            let mut webhook = Receiver::start().await;
            let setup = write_config(
                &broker,
                &Destinations {
                    v5,
                    ..Destinations::one_webhook(webhook.url("hook"))
                },
            );
            // The first run creates the persistent session; then the consumer is down.
            start(&setup).await.stop().await;
            let mut ids = Vec::new();
            for sample in [
                Sample::CloudEventsAppReload,
                Sample::CloudEventsReloadFinished,
            ] {
                let id = testkit::unique("while-down");
                let app = testkit::unique("app");
                publish(&broker, &setup.topic, event(sample, &id, TENANT, &app)).await;
                ids.push(id);
            }
            let mut consumer = start(&setup).await;
            for id in &ids {
                let (alert, _) = alerted(consumer.handled().await);
                assert_eq!(&alert.event_id, id, "{} v5={v5}", broker.name);
                assert_eq!(webhook.delivered().await.body["eventId"], id.as_str());
            }
            consumer.stop().await;
        }
    }
}

#[tokio::test]
async fn shared_subscription_splits_events_between_consumers() {
    // A shared subscription needs a shared store (check-config refuses one on files).
    if skip_without_redis() {
        return;
    }
    for broker in testkit::brokers() {
        let root = testkit::unique("qscloud-shared");
        let group = testkit::unique("group");
        let alert_root = testkit::unique("shared-alerts");
        let mut alerts = testkit::Subscriber::connect(&broker, &format!("{alert_root}/#")).await;
        let mut receivers = Vec::new();
        let mut setups = Vec::new();
        for _ in 0..2 {
            let receiver = Receiver::start().await;
            setups.push(write_config(
                &broker,
                &Destinations {
                    v5: true,
                    shared_group: Some(group.clone()),
                    state_store: Some("redis://127.0.0.1:6379/0".to_owned()),
                    topic_root: Some(root.clone()),
                    // The MQTT sink speaks MQTT 5 too.
                    mqtt_topic: Some(format!("{alert_root}/{{tenantId}}/{{appId}}")),
                    ..Destinations::one_webhook(receiver.url("hook"))
                },
            ));
            receivers.push(receiver);
        }
        let mut a = start(&setups[0]).await;
        let mut b = start(&setups[1]).await;
        let mut published = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let id = testkit::unique("shared");
            let app = testkit::unique("app");
            publish(
                &broker,
                &setups[0].topic,
                event(Sample::CloudEventsAppReload, &id, TENANT, &app),
            )
            .await;
            published.insert(id);
        }
        let mut handled = Vec::new();
        let (mut by_a, mut by_b) = (0, 0);
        while handled.len() < published.len() {
            let next = tokio::select! {
                h = a.handled() => { by_a += 1; h }
                h = b.handled() => { by_b += 1; h }
            };
            handled.push(alerted(next).0.event_id);
        }
        let unique: std::collections::BTreeSet<String> = handled.iter().cloned().collect();
        assert_eq!(unique, published, "{}: each event once", broker.name);
        assert_eq!(
            handled.len(),
            published.len(),
            "{}: no event twice",
            broker.name
        );
        eprintln!("{}: shared group split {by_a}/{by_b}", broker.name);
        // Awaited before the consumers stop: an alert a slow destination holds on disk is
        // handled (its event acknowledged) but still on its way, and a stop would leave it for
        // the next start.
        let mut republished = std::collections::BTreeSet::new();
        for _ in 0..published.len() {
            let (_, payload) = alerts.next(WAIT).await.expect("alert re-published");
            let payload: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
            republished.insert(payload["eventId"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(republished, published, "{}", broker.name);
        let mut delivered = 0;
        for receiver in &mut receivers {
            delivered += receiver.drain_delivered().len();
        }
        while delivered < published.len() {
            let (first, second) = receivers.split_at_mut(1);
            let r = tokio::select! {
                r = first[0].delivered() => r,
                r = second[0].delivered() => r,
            };
            assert!(published.contains(r.body["eventId"].as_str().unwrap_or_default()));
            delivered += 1;
        }
        a.stop().await;
        b.stop().await;
        let late: usize = receivers
            .iter_mut()
            .map(|r| r.drain_delivered().len())
            .sum();
        assert_eq!(
            delivered + late,
            published.len(),
            "{}: each alert once",
            broker.name
        );
    }
}

#[tokio::test]
async fn a_sink_that_is_down_gets_the_alert_parked_and_replay_delivers_it() {
    for broker in testkit::brokers() {
        let mut webhook = Receiver::start().await;
        webhook.set_mode(Mode::Fail);
        let mut slack = Receiver::start().await;
        let setup = write_config(
            &broker,
            &Destinations {
                webhook: Some(webhook.url("hook")),
                slack: Some(slack.url("services/slack-token")),
                max_attempts: 3,
                ..Default::default()
            },
        );
        let mut consumer = start(&setup).await;
        let id = testkit::unique("event");
        publish(
            &broker,
            &setup.topic,
            event(Sample::Hybrid, &id, TENANT, &testkit::unique("app")),
        )
        .await;
        let (_, outcomes) = alerted(consumer.handled().await);
        // The webhook was tried three times, then parked; Slack was not held up by it.
        for _ in 0..3 {
            webhook.failed().await;
        }
        let parked = outcomes
            .iter()
            .find(|(name, _)| name == "webhook:ops")
            .map(|(_, o)| o.clone());
        let Some(Outcome::Parked { path, error }) = parked else {
            panic!("{}: webhook outcome {outcomes:?}", broker.name)
        };
        assert!(error.contains("503"), "{error}");
        assert!(
            !error.contains("127.0.0.1:") || error.contains("/***"),
            "URL masked: {error}"
        );
        assert!(slack.delivered().await.body["blocks"].is_array());
        consumer.stop().await;

        assert_eq!(setup.parked_files(), vec![path.clone()]);
        let parked = read_json(&path);
        assert_eq!(parked["sink"], "webhook:ops");
        assert_eq!(parked["attempts"], 3);
        assert_eq!(parked["alert"]["eventId"], id.as_str());
        assert!(parked["parkedAt"].is_string());
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !stored.contains("webhook-header-secret"),
            "no header secret in parked file"
        );

        // Still down: replay keeps the file and says so with exit code 75.
        let (code, _, stderr) = run_command(&setup, &["replay"]).await;
        assert_eq!(code, 75, "{stderr}");
        assert_eq!(setup.parked_files().len(), 1);
        let (code, stdout, _) = run_command(&setup, &["replay", "--list"]).await;
        assert_eq!(code, 75, "an alert is parked");
        assert!(
            stdout.contains("webhook:ops") && stdout.contains(&id),
            "{stdout}"
        );

        // Back up: replay delivers and removes the file.
        webhook.set_mode(Mode::Ok);
        let (code, _, stderr) = run_command(&setup, &["replay"]).await;
        assert_eq!(code, 0, "{stderr}");
        let got = webhook.delivered().await;
        assert_eq!(got.body["eventId"], id.as_str());
        assert!(setup.parked_files().is_empty(), "{}", broker.name);
        assert!(!stderr.contains("webhook-header-secret"));
        assert!(!stderr.contains("slack-token"));
    }
}

#[tokio::test]
async fn rate_limit_drops_further_alerts_for_the_same_app_per_destination() {
    let broker = testkit::embedded();
    let mut slack = Receiver::start().await;
    let mut webhook = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/slack-token")),
            chat_rate_limit: 300,
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    let mut consumer = start(&setup).await;
    let app = testkit::unique("app");
    let other_app = testkit::unique("app");
    let events = [
        (testkit::unique("first"), app.clone()),
        (testkit::unique("second"), app.clone()),
        (testkit::unique("third"), other_app.clone()),
    ];
    for (id, app) in &events {
        publish(
            &broker,
            &setup.topic,
            event(Sample::CloudEventsAppReload, id, TENANT, app),
        )
        .await;
    }
    let slack_name = format!("slack:{TENANT}");
    let mut slack_outcomes = Vec::new();
    for _ in &events {
        let (_, outcomes) = alerted(consumer.handled().await);
        let slack_outcome = outcomes
            .iter()
            .find(|(n, _)| *n == slack_name)
            .map(|(_, o)| o.clone());
        slack_outcomes.push(slack_outcome);
    }
    assert!(matches!(slack_outcomes[0], Some(Outcome::Delivered { .. })));
    assert_eq!(
        slack_outcomes[1],
        Some(Outcome::RateLimited),
        "same app within 300 s"
    );
    assert!(
        matches!(slack_outcomes[2], Some(Outcome::Delivered { .. })),
        "another app"
    );
    assert!(slack.delivered().await.body["blocks"].is_array());
    slack.delivered().await;
    assert!(slack.drain_delivered().is_empty());
    // The webhook has no rate limit: it got all three.
    for _ in &events {
        webhook.delivered().await;
    }
    consumer.stop().await;
}

#[tokio::test]
async fn alerts_re_published_under_the_subscription_are_not_taken_for_events() {
    let broker = testkit::embedded();
    let root = testkit::unique("qscloud-own");
    let setup = write_config(
        &broker,
        &Destinations {
            // An alert topic inside the subscription: `qscloud/#` and `qscloud/alert/{tenantId}/{appId}`.
            topic_root: Some(root.clone()),
            mqtt_topic: Some(format!("{root}/alert/{{tenantId}}/{{appId}}")),
            max_attempts: 1,
            ..Default::default()
        },
    );
    let mut consumer = start(&setup).await;
    let id = testkit::unique("event");
    let app = testkit::unique("app");
    publish(
        &broker,
        &setup.topic,
        event(Sample::Legacy, &id, TENANT, &app),
    )
    .await;
    let (alert, _) = alerted(consumer.handled().await);
    assert_eq!(alert.event_id, id);
    assert_eq!(
        consumer.handled().await,
        Handled::OwnAlert {
            topic: format!("{root}/alert/{TENANT}/{app}")
        }
    );
    consumer.stop().await;
}

/// Issue 9: Qlik reports one failed app reload twice, as `com.qlik.v1.app.reload.finished`
/// (status error) and as `com.qlik.v1.reload.finished` (FAILED), with different event ids and
/// the same reload id. One alert, also after a restart; another reload still alerts.
#[tokio::test]
async fn both_event_types_of_one_failed_reload_alert_once() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    let setup = webhook_only(&broker, &webhook.url("hook"));
    let mut consumer = start(&setup).await;
    let app = testkit::unique("app");
    let reload = testkit::unique("reload");
    let (app_event, reload_event) = (testkit::unique("event"), testkit::unique("event"));
    for (sample, id) in [
        (Sample::CloudEventsAppReload, &app_event),
        (Sample::CloudEventsReloadFinished, &reload_event),
    ] {
        let body = event_with_reload(sample, id, TENANT, &app, &reload);
        publish(&broker, &setup.topic, body).await;
    }
    let (alert, _) = alerted(consumer.handled().await);
    assert_eq!(alert.event_id, app_event);
    assert_eq!(
        consumer.handled().await,
        Handled::Duplicate {
            event_id: reload_event.clone(),
            tenant_id: TENANT.to_owned(),
        }
    );
    consumer.stop().await;

    let mut consumer = start(&setup).await;
    let legacy = testkit::unique("event");
    let body = event_with_reload(Sample::Legacy, &legacy, TENANT, &app, &reload);
    publish(&broker, &setup.topic, body).await;
    assert_eq!(
        consumer.handled().await,
        Handled::Duplicate {
            event_id: legacy,
            tenant_id: TENANT.to_owned(),
        },
        "remembered across a restart"
    );
    let other = testkit::unique("event");
    publish(
        &broker,
        &setup.topic,
        event(Sample::CloudEventsReloadFinished, &other, TENANT, &app),
    )
    .await;
    let (alert, _) = alerted(consumer.handled().await);
    assert_eq!(
        alert.event_id, other,
        "another reload of the same app alerts"
    );
    consumer.stop().await;
    let got = webhook.delivered().await;
    assert_eq!(got.body["eventId"], app_event.as_str());
    let got = webhook.delivered().await;
    assert_eq!(got.body["eventId"], other.as_str());
    assert!(webhook.drain_delivered().is_empty());
}
