//! A tenant given by hostname, as Butler's documentation shows it (`id:
//! tenant.region.qlikcloud.com`): the consumer resolves the tenant id through the tenant API
//! (`GET /api/v1/users/me`) and alerts on the events that carry that id; a refused JWT stops
//! `check-config` and `run` with the key to fix; while the tenant API is down at start nothing is
//! subscribed (so nothing is acknowledged or dropped) and `/healthz` says why; a tenant id used
//! as before makes no such call.

mod support;

use std::time::Duration;

use support::fake_tenant::{self, FakeTenant, Fault, Route};
use support::*;

const HOSTNAME: &str = "tenant.region.qlikcloud.com";
const ID_KEY: &str = "Butler.qlikSenseCloud.event.mqtt.tenant.id";

/// A set-up whose tenant is given by hostname, enriched through `tenant`, alerting to `webhook`.
fn by_hostname(broker: &testkit::TestBroker, tenant: &FakeTenant, webhook: &str) -> Setup {
    let mut setup = write_config(broker, &Destinations::one_webhook(webhook).through(tenant));
    setup.edit(|c| {
        c.tenant("id", HOSTNAME);
    });
    setup
}

/// `consumer run`, without waiting for anything.
fn spawn_run(setup: &Setup) -> Binary {
    Binary::spawn(run_command_for(setup))
}

/// Starts the consumer in this process, publishes one failed reload of the fake tenant's app
/// and returns the consumer with what it alerted.
async fn alert_one(
    broker: &testkit::TestBroker,
    setup: &Setup,
) -> (
    Running,
    (
        Box<consumer::alert::Alert>,
        Vec<(String, consumer::delivery::Outcome)>,
    ),
) {
    let mut consumer = start(setup).await;
    let id = testkit::unique("evt");
    publish_event(
        broker,
        setup,
        Sample::CloudEventsAppReload,
        &id,
        fake_tenant::APP_ID,
    )
    .await;
    let alerted = alerted(consumer.handled().await);
    (consumer, alerted)
}

async fn healthz(port: u16) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("metrics server answers");
    let status = response.status().as_u16();
    let body = response.json().await.expect("JSON body");
    (status, body)
}

#[tokio::test]
async fn a_tenant_given_by_hostname_is_resolved_and_alerts_end_to_end() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut webhook = Receiver::start().await;
    let setup = by_hostname(&broker, &tenant, &webhook.url("hook"));

    let (code, stdout, stderr) = run_command(&setup, &["check-config"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("{HOSTNAME} → {TENANT}")),
        "{stdout}"
    );
    assert!(!stdout.contains(&tenant.jwt()), "{stdout}");

    // `preview` resolves the hostname as `run` does: the event of the real id matches.
    let event_file = setup.dir.path().join("event.json");
    let sample = event(
        Sample::CloudEventsAppReload,
        "preview-evt",
        TENANT,
        fake_tenant::APP_ID,
    );
    std::fs::write(&event_file, sample).expect("event file");
    let path = event_file.display().to_string();
    let (code, stdout, stderr) = run_command(&setup, &["preview", "--event", &path]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("webhook:ops"), "{stdout}");
    assert_eq!(webhook.drain_delivered().len(), 0, "preview sends nothing");

    let (consumer, (alert, outcomes)) = alert_one(&broker, &setup).await;
    assert_eq!(alert.tenant_id, TENANT);
    assert!(
        outcomes.iter().any(|(name, _)| name == "webhook:ops"),
        "{outcomes:?}"
    );
    let body = webhook.delivered().await.body;
    assert_eq!(
        body["appOwnerEmail"], "anna.andersson@example.com",
        "{body}"
    );
    consumer.stop().await;
    assert!(
        tenant.count(Route::Me) >= 2,
        "check-config and run each ask"
    );
}

#[tokio::test]
async fn a_refused_jwt_stops_check_config_and_run_with_the_key_to_fix() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let setup = by_hostname(&broker, &tenant, "http://127.0.0.1:9/hook");
    let configured_jwt = tenant.jwt();
    tenant.set_jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJvdGhlciJ9.b3RoZXI");

    let (code, stdout, stderr) = run_command(&setup, &["check-config"]).await;
    assert_eq!(
        code,
        i32::from(consumer::exit::CONFIG_INVALID),
        "{stdout}{stderr}"
    );
    assert!(stdout.contains(ID_KEY), "{stdout}");
    assert!(stdout.contains("refused the JWT"), "{stdout}");
    assert!(stdout.contains("401"), "{stdout}");
    assert!(stdout.contains("Configuration NOT OK"), "{stdout}");
    assert!(!stdout.contains(&configured_jwt), "{stdout}");

    let mut run = spawn_run(&setup);
    let status = tokio::time::timeout(WAIT, run.wait_exit(&[&configured_jwt]))
        .await
        .expect("run stops");
    let log = run.stderr();
    assert_eq!(
        status.code(),
        Some(i32::from(consumer::exit::CONFIG_INVALID)),
        "{log}"
    );
    assert!(
        log.contains(ID_KEY) && log.contains("refused the JWT"),
        "{log}"
    );
    assert!(!log.contains(&configured_jwt), "{log}");
    assert!(!log.contains("subscribed with QoS 1"), "{log}");
}

#[tokio::test]
async fn the_tenant_api_down_at_start_delays_the_subscription_and_drops_nothing() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut webhook = Receiver::start().await;
    let port = free_port();
    let mut setup = by_hostname(&broker, &tenant, &webhook.url("hook"));
    setup.edit(|c| {
        c.consumer("metrics.listen", format!("127.0.0.1:{port}"));
    });

    // A first run creates the persistent session, as an installed consumer has one.
    let first = spawn_binary(&setup).await;
    first.terminate().await;

    tenant.fail_always(Route::Me, Fault::Status(503));
    let mut consumer = spawn_run(&setup);
    consumer.wait_for_line("tenant id not resolved yet").await;
    let (status, body) = healthz(port).await;
    assert_eq!(status, 503, "{body}");
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains(&format!("tenant {HOSTNAME}: tenant id not resolved yet"))
            && reason.contains("503"),
        "{body}"
    );

    // Published while the id is unknown: the broker keeps it, nothing is acknowledged.
    let id = testkit::unique("evt");
    publish_event(
        &broker,
        &setup,
        Sample::CloudEventsAppReload,
        &id,
        fake_tenant::APP_ID,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        webhook.requests(),
        0,
        "nothing alerted before the id is known"
    );
    assert!(!consumer.stderr().contains("subscribed with QoS 1"));

    tenant.heal();
    consumer.wait_for_line("subscribed with QoS 1").await;
    wait_for_decision(&mut consumer, &id).await;
    let body = webhook.delivered().await.body;
    assert_eq!(
        body["appOwnerEmail"], "anna.andersson@example.com",
        "{body}"
    );
    let (status, body) = healthz(port).await;
    assert_eq!(status, 200, "{body}");
    consumer.terminate().await;
}

#[tokio::test]
async fn a_tenant_id_used_as_today_makes_no_call_to_users_me() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut webhook = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations::one_webhook(webhook.url("hook")).through(&tenant),
    );
    let (code, stdout, stderr) = run_command(&setup, &["check-config"]).await;
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(!stdout.contains(&format!("→ {TENANT}")), "{stdout}");

    let (consumer, (alert, _)) = alert_one(&broker, &setup).await;
    assert_eq!(alert.tenant_id, TENANT);
    webhook.delivered().await;
    consumer.stop().await;
    assert_eq!(tenant.count(Route::Me), 0, "{:?}", tenant.requests());
    assert!(
        tenant.count(Route::Reload) > 0,
        "enrichment still calls the API"
    );
}
