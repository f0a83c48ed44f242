//! Alerts enriched through the (fake) tenant REST API: the script log lands on disk whole, chat
//! messages carry the owner and the script log excerpt with each destination's line counts,
//! Butler's `alertEnableByTag` picks destinations by app tag, and when the tenant API is down
//! the alert still goes out and says what is missing. Butler's `basicContentOnly` sends the
//! basic message and spares the tenant API.

mod support;

use support::fake_tenant::{self, FakeTenant, Fault, Route};
use support::*;

#[tokio::test]
async fn enriched_alert_reaches_each_destination_with_its_script_log_excerpt() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut slack = Receiver::start().await;
    let mut teams = Receiver::start().await;
    let mut webhook = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/slack-token")),
            slack_formatted: true,
            teams: Some(teams.url("webhookb2/teams-token")),
            teams_formatted: true,
            // The fake app carries the Teams tag but not this one.
            slack_tag: Some("Butler - Send Slack alert if app reload fails".into()),
            teams_tag: Some("Butler - Send Teams alert if app reload fails".into()),
            script_log: true,
            tenant_url: Some(tenant.url()),
            jwt: Some(tenant.jwt()),
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    let mut consumer = start(&setup).await;
    publish_reload(&broker, &setup, Sample::CloudEventsAppReload).await;
    let alert = match consumer.handled().await {
        consumer::transforms::Handled::Alerted { alert, outcomes } => {
            let names: Vec<&str> = outcomes.iter().map(|(n, _)| n.as_str()).collect();
            assert!(!names.iter().any(|n| n.starts_with("slack:")), "{names:?}");
            assert!(names.iter().any(|n| n.starts_with("teams:")), "{names:?}");
            alert
        }
        other => panic!("{other:?}"),
    };
    assert!(alert.app_tags.iter().any(|t| t == "Finance"));
    let log = fake_tenant::script_log(40);

    // Script log on disk: the whole log as the tenant returned it.
    let file = setup.script_log_dir.join("2026-11-30").join(format!(
        "2026-11-30T07-06-22_appId={}_reloadId={}.log",
        fake_tenant::APP_ID,
        fake_tenant::RELOAD_ID
    ));
    assert_eq!(
        std::fs::read_to_string(&file).expect("script log file"),
        log
    );

    // Teams (formatted, shipped template): owner and the last 3 lines of the log.
    let card = teams.delivered().await.body;
    let text = card.to_string();
    assert!(text.contains("Anna Andersson"), "{text}");
    let tail = card["attachments"][0]["content"]["body"][3]["codeSnippet"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(tail.lines().count(), 3, "{tail}");
    assert!(tail.ends_with("Execution finished."), "{tail}");

    // Webhook: the shared context, with what the tenant API added.
    let body = webhook.delivered().await.body;
    assert_eq!(body["appOwnerEmail"], "anna.andersson@example.com");
    assert_eq!(
        body["appDescription"],
        "Daily sales by region, reloaded every morning"
    );
    assert_eq!(body["missing"], serde_json::json!([]));

    // Slack was filtered out by its tag.
    assert!(slack.drain_delivered().is_empty());
    consumer.stop().await;
}

#[tokio::test]
async fn tenant_api_down_still_alerts_and_says_what_is_missing() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    tenant.fail_everything(Fault::Status(503));
    let mut slack = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            script_log: true,
            ..formatted_slack_through(&tenant, &slack)
        },
    );
    let mut consumer = start(&setup).await;
    publish_reload(&broker, &setup, Sample::CloudEventsReloadFinished).await;
    assert_alerted(&consumer.handled().await);
    let message = slack.delivered().await.body;
    let text = message.to_string();
    assert!(text.contains("Not available from the tenant API"), "{text}");
    assert!(text.contains("RELOADS-007"), "{text}");
    let file = setup.script_log_dir.join("2026-11-30").join(format!(
        "2026-11-30T07-06-25_appId={}_reloadId={}.log",
        fake_tenant::APP_ID,
        fake_tenant::RELOAD_ID
    ));
    let content = std::fs::read_to_string(&file).expect("placeholder script log file");
    assert!(content.starts_with("Script log not available"), "{content}");
    assert!(content.contains("503"), "{content}");
    consumer.stop().await;
}

/// Publishes one event of `sample` for the fake tenant's app and reload, with a fresh id.
async fn publish_reload(broker: &testkit::TestBroker, setup: &Setup, sample: Sample) {
    let id = testkit::unique("event");
    let payload = event_with_reload(
        sample,
        &id,
        TENANT,
        fake_tenant::APP_ID,
        fake_tenant::RELOAD_ID,
    );
    publish(broker, &setup.topic, payload).await;
}

/// The consumer's next event was alerted on.
#[track_caller]
fn assert_alerted(handled: &consumer::transforms::Handled) {
    assert!(
        matches!(handled, consumer::transforms::Handled::Alerted { .. }),
        "{handled:?}"
    );
}

/// Publishes one failed app reload and returns once the consumer alerted.
async fn alert_once(broker: &testkit::TestBroker, setup: &Setup, consumer: &mut Running) {
    publish_reload(broker, setup, Sample::CloudEventsAppReload).await;
    assert_alerted(&consumer.handled().await);
}

/// Enrichment through `tenant` and no retry; a test adds its destinations with
/// `Destinations { …, ..through(&tenant) }`.
fn through(tenant: &FakeTenant) -> Destinations {
    Destinations {
        tenant_url: Some(tenant.url()),
        jwt: Some(tenant.jwt()),
        max_attempts: 1,
        ..Default::default()
    }
}

/// A formatted Slack alert to `slack`, enriched through `tenant`, no retry.
fn formatted_slack_through(tenant: &FakeTenant, slack: &Receiver) -> Destinations {
    Destinations {
        slack: Some(slack.url("services/slack-token")),
        slack_formatted: true,
        ..through(tenant)
    }
}

/// With `basicContentOnly` on every destination that needs anything (the log line shows what
/// the alert carries and asks for nothing), the tenant API is not called at all and the
/// destination gets the basic message even when `messageType` is `formatted`.
#[tokio::test]
async fn basic_content_only_sends_the_basic_message_without_tenant_api_calls() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut slack = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            basic_content_only: true,
            ..formatted_slack_through(&tenant, &slack)
        },
    );
    let mut consumer = start(&setup).await;
    alert_once(&broker, &setup, &mut consumer).await;
    let message = slack.delivered().await.body;
    assert_eq!(message["blocks"][0]["type"], "header", "{message}");
    assert!(
        message["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("Qlik Cloud app reload failed")),
        "{message}"
    );
    let requests: Vec<Route> = tenant.requests().iter().map(|r| r.route).collect();
    assert!(requests.is_empty(), "{requests:?}");
    consumer.stop().await;
}

/// `basicContentOnly` with `alertEnableByTag`: only the app's tags are fetched, which is what
/// the gate needs; the tagged destination gets its basic message, the other none. A destination
/// without `basicContentOnly` (the script log) brings back the full enrichment.
#[tokio::test]
async fn basic_content_only_with_tag_gating_fetches_only_the_tags() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut slack = Receiver::start().await;
    let mut teams = Receiver::start().await;
    let mut destinations = Destinations {
        slack: Some(slack.url("services/slack-token")),
        teams: Some(teams.url("webhookb2/teams-token")),
        teams_formatted: true,
        // The fake app carries the Teams tag but not this one.
        slack_tag: Some("Butler - Send Slack alert if app reload fails".into()),
        teams_tag: Some("Butler - Send Teams alert if app reload fails".into()),
        basic_content_only: true,
        ..through(&tenant)
    };
    let setup = write_config(&broker, &destinations);
    let mut consumer = start(&setup).await;
    alert_once(&broker, &setup, &mut consumer).await;
    let card = teams.delivered().await.body;
    let content = &card["attachments"][0]["content"];
    assert_eq!(content["body"][0]["style"], "heading", "{card}");
    assert!(!card.to_string().contains("Execution finished."), "{card}");
    assert!(slack.drain_delivered().is_empty());
    let requests: Vec<Route> = tenant.requests().iter().map(|r| r.route).collect();
    assert!(!requests.is_empty(), "the tags are fetched");
    assert!(requests.iter().all(|r| *r == Route::Items), "{requests:?}");
    consumer.stop().await;

    destinations.script_log = true;
    let setup = write_config(&broker, &destinations);
    let before = tenant.requests().len();
    let mut consumer = start(&setup).await;
    alert_once(&broker, &setup, &mut consumer).await;
    let card = teams.delivered().await.body;
    assert!(!card.to_string().contains("Execution finished."), "{card}");
    assert!(
        tenant.requests()[before..]
            .iter()
            .any(|r| r.route == Route::ScriptLog),
        "the script log destination needs the full enrichment"
    );
    consumer.stop().await;
}
