//! Enrichment against a fake Qlik tenant on 127.0.0.1: full answers, the JWT check, 503s,
//! 429 with Retry-After (honoured and capped), timeouts, a tenant that is down. The alert
//! context is always built, and says what is missing.

mod support;

use std::time::{Duration, Instant};

use consumer::config::{
    AuthType, EnrichmentConfig, SecretSource, TenantAlerts, TenantConfig, load_with_env,
};
use consumer::enrich::{Enrichment, Resource, build_context};
use consumer::tenant_api::TenantClient;
use qlik_events::Envelope;
use secrecy::SecretString;
use support::fake_tenant::{self, FakeTenant, Fault, Route};
use testkit::butler::{Broker, Config, Tenant};

const APP_RELOAD: &str =
    include_str!("../../testdata/qlik-samples/app-reload-failed.cloudevents.json");
const RELOAD_FINISHED: &str =
    include_str!("../../testdata/qlik-samples/reload-finished-failed.cloudevents.json");
const LEGACY: &str = include_str!("../../testdata/qlik-samples/app-reload-failed.legacy.json");

fn fast() -> EnrichmentConfig {
    EnrichmentConfig {
        request_timeout: Duration::from_secs(3),
        max_retries: 3,
        max_retry_after: Duration::from_secs(2),
        initial_backoff: Duration::from_millis(10),
        ..EnrichmentConfig::default()
    }
}

fn tenant_for(fake: &FakeTenant, jwt: &str) -> TenantConfig {
    TenantConfig {
        id: fake_tenant::TENANT_ID.to_owned(),
        configured_id: None,
        tenant_url: url::Url::parse(&fake.url()).expect("url"),
        auth_type: AuthType::Jwt,
        jwt: SecretString::from(jwt.to_owned()),
        jwt_source: SecretSource::None,
        qmc_url: Some("https://acme.eu.qlikcloud.com/console".to_owned()),
        hub_url: Some("https://acme.eu.qlikcloud.com/hub".to_owned()),
        comment: Some("fake".to_owned()),
        alert: TenantAlerts::default(),
        watchdog_relay_url: None,
        key_path: "Butler.qlikSenseCloud.event.mqtt.tenant".to_owned(),
    }
}

fn client(fake: &FakeTenant, settings: EnrichmentConfig) -> TenantClient {
    TenantClient::new(&tenant_for(fake, &fake.jwt()), &settings).expect("client")
}

fn sample(body: &str) -> (Envelope, qlik_events::ReloadEvent) {
    let envelope = Envelope::parse(body.as_bytes()).expect("envelope");
    let reload = envelope.reload().expect("reload event");
    (envelope, reload)
}

/// The template context of an event enriched through `fake` with its own JWT, with this many
/// script log lines at the head and the tail.
fn context_via(
    fake: &FakeTenant,
    (envelope, reload): (&Envelope, &qlik_events::ReloadEvent),
    e: &Enrichment,
    (head_lines, tail_lines): (usize, usize),
) -> consumer::enrich::AlertContext {
    let tenant = tenant_for(fake, fake_tenant::JWT);
    build_context(envelope, reload, &tenant, e, head_lines, tail_lines)
}

fn missing_of(e: &Enrichment, what: Resource) -> Option<&str> {
    e.missing
        .iter()
        .find(|m| m.what == what)
        .map(|m| m.reason.as_str())
}

fn assert_no_jwt(text: &str) {
    assert!(
        !text.contains(fake_tenant::JWT),
        "the JWT leaked into output"
    );
    assert!(
        !text.contains("wrong-but-jwt-shaped"),
        "a JWT leaked into output"
    );
}

#[tokio::test]
async fn healthy_tenant_gives_everything() {
    let fake = FakeTenant::start().await;
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client(&fake, fast()).enrich(&envelope, &reload).await;

    assert!(e.missing.is_empty(), "{:?}", e.missing);
    let info = e.reload.as_ref().expect("reload");
    assert_eq!(info.status.as_deref(), Some("FAILED"));
    assert_eq!(info.reload_type.as_deref(), Some("chronos"));
    let log = e.script_log.as_deref().expect("script log");
    assert!(log.ends_with("Execution finished.\r\n"));
    assert_eq!(
        e.app.as_ref().and_then(|a| a.owner_id.as_deref()),
        Some(fake_tenant::OWNER_ID)
    );
    assert_eq!(
        e.app_tags(),
        ["Finance", "Butler - Send Teams alert if app reload fails"]
    );
    assert_eq!(
        e.owner.as_ref().and_then(|o| o.email.as_deref()),
        Some("anna.andersson@example.com")
    );

    // Each endpoint once, authorized, with the right Accept and query.
    for route in Route::CALLED {
        assert_eq!(fake.count(route), 1, "{route:?}");
    }
    let requests = fake.requests();
    assert!(requests.iter().all(|r| r.authorized));
    let log_req = requests
        .iter()
        .find(|r| r.route == Route::ScriptLog)
        .expect("log request");
    assert_eq!(
        log_req.path,
        format!(
            "/api/v1/apps/{}/reloads/logs/{}",
            fake_tenant::APP_ID,
            fake_tenant::RELOAD_ID
        )
    );
    assert_eq!(log_req.accept.as_deref(), Some("text/plain"));
    let items = requests
        .iter()
        .find(|r| r.route == Route::Items)
        .expect("items request");
    let query = items.query.as_deref().unwrap_or_default();
    assert!(query.contains("resourceType=app"), "{query}");
    assert!(
        query.contains(&format!("resourceId={}", fake_tenant::APP_ID)),
        "{query}"
    );

    let ctx = context_via(&fake, (&envelope, &reload), &e, (3, 2));
    assert_eq!(ctx.app_name, "Sales dashboard");
    assert_eq!(
        ctx.app_url,
        format!("{}/sense/app/{}", fake.url(), fake_tenant::APP_ID)
    );
    assert_eq!(ctx.app_owner_name, "Anna Andersson");
    assert_eq!(ctx.app_owner_email, "anna.andersson@example.com");
    assert_eq!(ctx.error_code, "RELOADS-007");
    assert_eq!(ctx.reload_trigger, "chronos");
    assert_eq!(ctx.execution_duration.seconds, 8);
    assert_eq!(ctx.script_log_size_rows, "40");
    assert_eq!(
        ctx.script_log_tail,
        "20261130T070621.395+0000 Execution Failed\n20261130T070621.400+0000 Execution finished."
    );
    assert!(ctx.missing.is_empty());
    assert_no_jwt(&format!("{e:?} {ctx:?}"));
}

#[tokio::test]
async fn wrong_jwt_is_rejected_and_not_retried() {
    let fake = FakeTenant::start().await;
    let (envelope, reload) = sample(APP_RELOAD);
    let wrong = "eyJhbGciOiJub25lIn0.d3JvbmctYnV0LWp3dC1zaGFwZWQ.c2ln";
    let client = TenantClient::new(&tenant_for(&fake, wrong), &fast()).expect("client");
    let e = client.enrich(&envelope, &reload).await;

    assert_eq!(e.missing.len(), 5, "{:?}", e.missing);
    assert_eq!(
        missing_of(&e, Resource::Reload),
        Some(
            "HTTP 401 after 1 attempt(s) (the tenant rejected the JWT: check auth.jwt.token / QLIK_TENANT_JWT)"
        )
    );
    // A 401 will not get better by asking again.
    for route in Route::CALLED {
        assert_eq!(fake.count(route), 1, "{route:?}");
    }
    assert!(fake.requests().iter().all(|r| !r.authorized));
    assert_no_jwt(&format!("{e:?} {client:?}"));
    assert!(!format!("{e:?} {client:?}").contains(wrong));

    // The alert context is still complete from the event alone.
    let ctx = build_context(&envelope, &reload, &tenant_for(&fake, wrong), &e, 10, 10);
    assert_eq!(ctx.app_name, "Sales dashboard");
    assert_eq!(ctx.reload_id, fake_tenant::RELOAD_ID);
    assert_eq!(ctx.error_message, "Field 'Amount' not found");
    assert_eq!(ctx.missing.len(), 5);
    assert!(
        ctx.missing
            .iter()
            .any(|m| m.starts_with("script log: HTTP 401"))
    );
}

#[tokio::test]
async fn a_503_is_retried_until_it_succeeds() {
    let fake = FakeTenant::start().await;
    fake.fail_next(Route::ScriptLog, [Fault::Status(503), Fault::Status(502)]);
    fake.fail_next(Route::App, [Fault::Status(500)]);
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client(&fake, fast()).enrich(&envelope, &reload).await;
    assert!(e.missing.is_empty(), "{:?}", e.missing);
    assert!(e.script_log.is_some());
    assert_eq!(fake.count(Route::ScriptLog), 3);
    assert_eq!(fake.count(Route::App), 2);
    assert_eq!(fake.count(Route::Reload), 1);
}

#[tokio::test]
async fn retries_are_bounded() {
    let fake = FakeTenant::start().await;
    fake.fail_always(Route::App, Fault::Status(503));
    let (envelope, reload) = sample(APP_RELOAD);
    let settings = EnrichmentConfig {
        max_retries: 2,
        ..fast()
    };
    let e = client(&fake, settings).enrich(&envelope, &reload).await;
    assert_eq!(
        missing_of(&e, Resource::App),
        Some("HTTP 503 after 3 attempt(s)")
    );
    assert_eq!(fake.count(Route::App), 3);
    // The rest arrived; the owner came from the event's owner id, not from the app.
    assert_eq!(e.missing.len(), 1);
    assert!(e.owner.is_some());
}

#[tokio::test]
async fn not_found_is_not_retried() {
    let fake = FakeTenant::start().await;
    fake.data(|d| d.reload_ids.clear());
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client(&fake, fast()).enrich(&envelope, &reload).await;
    assert_eq!(
        missing_of(&e, Resource::Reload),
        Some("HTTP 404 after 1 attempt(s) (not found)")
    );
    assert_eq!(fake.count(Route::Reload), 1);
    assert_eq!(fake.count(Route::ScriptLog), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let fake = FakeTenant::start().await;
    fake.fail_next(Route::Reload, [Fault::RetryAfter(429, "1".to_owned())]);
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client(&fake, fast()).enrich(&envelope, &reload).await;
    assert!(e.reload.is_some(), "{:?}", e.missing);
    let times: Vec<Instant> = fake
        .requests()
        .iter()
        .filter(|r| r.route == Route::Reload)
        .map(|r| r.at)
        .collect();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, not after Retry-After"
    );
    assert!(gap < Duration::from_secs(3), "{gap:?}");
}

#[tokio::test]
async fn a_long_retry_after_is_capped() {
    let fake = FakeTenant::start().await;
    fake.fail_next(Route::Items, [Fault::RetryAfter(503, "3600".to_owned())]);
    let (envelope, reload) = sample(APP_RELOAD);
    let settings = EnrichmentConfig {
        max_retry_after: Duration::from_millis(300),
        ..fast()
    };
    let started = Instant::now();
    let e = client(&fake, settings).enrich(&envelope, &reload).await;
    assert!(e.app_item.is_some(), "{:?}", e.missing);
    assert_eq!(fake.count(Route::Items), 2);
    let times: Vec<Instant> = fake
        .requests()
        .iter()
        .filter(|r| r.route == Route::Items)
        .map(|r| r.at)
        .collect();
    assert!(times[1] - times[0] >= Duration::from_millis(280));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_hanging_endpoint_times_out_and_the_rest_still_arrives() {
    let fake = FakeTenant::start().await;
    fake.fail_always(Route::ScriptLog, Fault::Hang);
    let (envelope, reload) = sample(APP_RELOAD);
    let settings = EnrichmentConfig {
        request_timeout: Duration::from_millis(300),
        max_retries: 1,
        ..fast()
    };
    let started = Instant::now();
    let e = client(&fake, settings).enrich(&envelope, &reload).await;
    assert_eq!(
        missing_of(&e, Resource::ScriptLog),
        Some("timed out after 2 attempt(s)")
    );
    assert_eq!(fake.count(Route::ScriptLog), 2);
    assert!(e.reload.is_some() && e.app.is_some() && e.owner.is_some());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_slow_tenant_within_the_timeout_is_fine() {
    let fake = FakeTenant::start().await;
    fake.fail_always(Route::User, Fault::Delay(Duration::from_millis(200)));
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client(&fake, fast()).enrich(&envelope, &reload).await;
    assert!(e.missing.is_empty(), "{:?}", e.missing);
    assert_eq!(fake.count(Route::User), 1);
}

#[tokio::test]
async fn tenant_down_still_gives_an_alert_that_says_what_is_missing() {
    let fake = FakeTenant::start().await;
    let tenant = tenant_for(&fake, fake_tenant::JWT);
    let settings = EnrichmentConfig {
        max_retries: 1,
        ..fast()
    };
    let client = TenantClient::new(&tenant, &settings).expect("client");
    // Nothing listens on the port any more: connection refused.
    drop(fake);
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client.enrich(&envelope, &reload).await;
    assert_eq!(e.missing.len(), 5, "{:?}", e.missing);
    for m in &e.missing {
        assert!(
            m.reason.starts_with("request failed after 2 attempt(s)"),
            "{m}"
        );
    }
    let ctx = build_context(&envelope, &reload, &tenant, &e, 10, 10);
    assert_eq!(ctx.app_name, "Sales dashboard");
    assert_eq!(ctx.app_owner_name, "Unknown");
    assert_eq!(ctx.missing.len(), 5);
    assert_no_jwt(&format!("{e:?} {ctx:?}"));
}

#[tokio::test]
async fn all_5xx_gives_event_only_context() {
    let fake = FakeTenant::start().await;
    fake.fail_everything(Fault::Status(500));
    let (envelope, reload) = sample(RELOAD_FINISHED);
    let settings = EnrichmentConfig {
        max_retries: 0,
        ..fast()
    };
    let e = client(&fake, settings).enrich(&envelope, &reload).await;
    assert_eq!(e.missing.len(), 5);
    let ctx = context_via(&fake, (&envelope, &reload), &e, (10, 10));
    assert_eq!(ctx.status, "FAILED");
    assert_eq!(ctx.error_code, "RELOADS-007");
    assert_eq!(ctx.reload_trigger, "chronos");
    assert_eq!(ctx.app_id, fake_tenant::APP_ID);
}

#[tokio::test]
async fn reload_finished_and_legacy_events_enrich_too() {
    let fake = FakeTenant::start().await;
    for body in [RELOAD_FINISHED, LEGACY] {
        let (envelope, reload) = sample(body);
        let e = client(&fake, fast()).enrich(&envelope, &reload).await;
        assert!(e.missing.is_empty(), "{:?}", e.missing);
        let ctx = context_via(&fake, (&envelope, &reload), &e, (5, 5));
        // The reload.finished event has no app name: the API supplies it.
        assert_eq!(ctx.app_name, "Sales dashboard");
        assert_eq!(ctx.app_owner_email, "anna.andersson@example.com");
    }
}

#[tokio::test]
async fn owner_comes_from_the_app_when_the_event_lacks_it() {
    let fake = FakeTenant::start().await;
    let mut body: serde_json::Value = serde_json::from_str(APP_RELOAD).expect("json");
    body.as_object_mut().expect("object").remove("ownerid");
    let (envelope, reload) = sample(&body.to_string());
    assert!(envelope.owner_id.is_none());
    let e = client(&fake, fast()).enrich(&envelope, &reload).await;
    assert!(e.missing.is_empty(), "{:?}", e.missing);
    assert_eq!(
        e.owner.as_ref().and_then(|o| o.name.as_deref()),
        Some("Anna Andersson")
    );
    assert_eq!(fake.count(Route::User), 1);
}

#[tokio::test]
async fn a_huge_script_log_keeps_its_end() {
    let fake = FakeTenant::start().await;
    fake.data(|d| d.script_log = fake_tenant::script_log(2000));
    let (envelope, reload) = sample(APP_RELOAD);
    let settings = EnrichmentConfig {
        max_script_log_bytes: 4096,
        ..fast()
    };
    let e = client(&fake, settings).enrich(&envelope, &reload).await;
    let log = e.script_log.as_deref().expect("log");
    assert!(log.len() <= 4096);
    assert!(log.ends_with("Execution finished.\r\n"));
    // The cut never leaves half a line at the start.
    assert!(log.starts_with("20261130T"), "{}", &log[..40]);
    assert!(
        missing_of(&e, Resource::ScriptLog)
            .is_some_and(|m| m.starts_with("longer than 4096 bytes")),
        "{:?}",
        e.missing
    );
}

/// From config file to enrichment: tenantUrl on loopback http, JWT from the environment.
#[tokio::test]
async fn configured_tenant_talks_to_the_fake() {
    let fake = FakeTenant::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("butler.yaml");
    // The JWT comes from the environment: the file holds Butler's placeholder.
    let tenant = Tenant::new(fake_tenant::TENANT_ID, &fake.url(), "<JWT token>");
    let files = Config::new(&Broker::new("127.0.0.1", 1883), "qscloud", &tenant);
    std::fs::write(&path, files.butler_yaml()).expect("write");
    let jwt = fake.jwt();
    let config = load_with_env(&path, None, &|name| {
        (name == "QLIK_TENANT_JWT").then(|| jwt.clone())
    })
    .expect("valid config");
    let client =
        TenantClient::new(&config.tenants[0], &config.consumer.enrichment).expect("client");
    let (envelope, reload) = sample(APP_RELOAD);
    let e = client.enrich(&envelope, &reload).await;
    assert!(e.missing.is_empty(), "{:?}", e.missing);
    assert!(fake.wait_for(Route::User, 1, Duration::from_secs(1)).await);
}

/// Issue 9: one event's enrichment ends at `enrichment.deadlineSeconds`, however the tenant
/// answers (a 429 with a long `Retry-After` on one endpoint, no answer on another). What
/// arrived in time is kept; the rest is listed as missing with the reason.
#[tokio::test]
async fn enrichment_ends_at_the_event_deadline_and_keeps_what_arrived() {
    let fake = FakeTenant::start().await;
    fake.fail_always(Route::ScriptLog, Fault::Hang);
    fake.fail_always(Route::Reload, Fault::RetryAfter(429, "30".into()));
    let (envelope, reload) = sample(APP_RELOAD);
    let settings = EnrichmentConfig {
        request_timeout: Duration::from_secs(60),
        max_retries: 5,
        max_retry_after: Duration::from_secs(30),
        deadline: Duration::from_secs(1),
        ..fast()
    };
    let started = std::time::Instant::now();
    let e = client(&fake, settings).enrich(&envelope, &reload).await;
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "took {took:?}");
    for what in [Resource::ScriptLog, Resource::Reload] {
        let reason = missing_of(&e, what).unwrap_or_default();
        assert!(reason.contains("deadlineSeconds"), "{what}: {reason}");
    }
    assert!(e.app.is_some() && e.app_item.is_some() && e.owner.is_some());
}
