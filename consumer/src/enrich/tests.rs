//! `build_context` is pure: these tests feed it events and enrichments and check every field a
//! Butler template reads.

use qlik_events::{Envelope, ReloadEvent};
use secrecy::SecretString;
use url::Url;

use super::*;
use crate::config::{AuthType, SecretSource, TenantAlerts, TenantConfig};
use crate::tenant_api::{AppInfo, AppItem, ReloadInfo, UserInfo};

const APP_RELOAD: &str =
    include_str!("../../../testdata/qlik-samples/app-reload-failed.cloudevents.json");
const RELOAD: &str =
    include_str!("../../../testdata/qlik-samples/reload-finished-failed.cloudevents.json");
const LEGACY: &str = include_str!("../../../testdata/qlik-samples/app-reload-failed.legacy.json");
const APP: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";

fn tenant(url: &str) -> TenantConfig {
    TenantConfig {
        id: "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ".to_owned(),
        configured_id: None,
        tenant_url: Url::parse(url).expect("url"),
        auth_type: AuthType::Jwt,
        jwt: SecretString::from("a.b.c"),
        jwt_source: SecretSource::None,
        qmc_url: Some("https://acme.eu.qlikcloud.com/console".to_owned()),
        hub_url: Some("https://acme.eu.qlikcloud.com/hub".to_owned()),
        comment: Some("Production".to_owned()),
        alert: TenantAlerts::default(),
        watchdog_relay_url: None,
        key_path: "Butler.qlikSenseCloud.event.mqtt.tenant".to_owned(),
    }
}

/// The context for the tenant at acme.eu.qlikcloud.com, 10 script log lines at each end.
fn context_at_acme(envelope: &Envelope, reload: &ReloadEvent, e: &Enrichment) -> AlertContext {
    build_context(
        envelope,
        reload,
        &tenant("https://acme.eu.qlikcloud.com"),
        e,
        10,
        10,
    )
}

fn full_enrichment() -> Enrichment {
    Enrichment {
        reload: Some(ReloadInfo {
            id: Some("674ab6e2c1d0f80012e3f4a5".to_owned()),
            app_id: Some(APP.to_owned()),
            reload_type: Some("chronos".to_owned()),
            status: Some("FAILED".to_owned()),
            log: Some("Error: Field 'Amount' not found\n".to_owned()),
            creation_time: Some("2026-11-30T07:06:10Z".to_owned()),
            start_time: Some("2026-11-30T07:06:12.000Z".to_owned()),
            end_time: Some("2026-11-30T08:09:15.900Z".to_owned()),
            error_code: Some("RELOADS-007".to_owned()),
            error_message: Some("The reload failed: script error".to_owned()),
            ..Default::default()
        }),
        script_log: Some("line 1\r\nline 2\r\nline 3\r\nline 4\r\nline \"5\"\r\n".into()),
        app: Some(AppInfo {
            name: Some("Sales dashboard (API)".to_owned()),
            description: Some("Daily sales".to_owned()),
            owner_id: Some("6319a8f0b3e1a2001f3c9d41".to_owned()),
            published: Some(true),
            has_section_access: Some(false),
            ..Default::default()
        }),
        app_item: Some(AppItem {
            tags: vec!["Finance".to_owned()],
            app_file_size: Some(1_234_567),
        }),
        owner: Some(UserInfo {
            id: Some("6319a8f0b3e1a2001f3c9d41".to_owned()),
            name: Some("Anna Andersson".to_owned()),
            email: Some("anna@example.com".to_owned()),
            picture: None,
        }),
        missing: Vec::new(),
    }
}

#[test]
fn app_reload_event_with_full_enrichment() {
    let envelope = Envelope::parse(APP_RELOAD.as_bytes()).expect("envelope");
    let reload = envelope.reload().expect("reload event");
    // A trailing slash in tenantUrl must not double up in appUrl.
    let tenant = tenant("https://acme.eu.qlikcloud.com/");
    let ctx = build_context(&envelope, &reload, &tenant, &full_enrichment(), 2, 3);

    assert_eq!(ctx.tenant_id, "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ");
    assert_eq!(ctx.tenant_url, "https://acme.eu.qlikcloud.com");
    assert_eq!(ctx.tenant_comment, "Production");
    assert_eq!(ctx.app_id, APP);
    // The event's name wins, as in Butler.
    assert_eq!(ctx.app_name, "Sales dashboard");
    assert_eq!(
        ctx.app_url,
        format!("https://acme.eu.qlikcloud.com/sense/app/{APP}")
    );
    assert_eq!(ctx.app_description, "Daily sales");
    assert!(ctx.app_is_published);
    assert_eq!(ctx.app_tags, ["Finance"]);
    assert_eq!(ctx.app_file_size, "1,234,567");
    assert_eq!(ctx.reload_id, "674ab6e2c1d0f80012e3f4a5");
    assert_eq!(ctx.status, "error");
    assert_eq!(ctx.execution_status_text, "FAILED");
    assert_eq!(ctx.error_code, "RELOADS-007");
    assert_eq!(ctx.error_message, "The reload failed: script error");
    assert_eq!(ctx.reload_trigger, "chronos");
    assert_eq!(
        ctx.execution_duration,
        ExecutionDuration {
            hours: 1,
            minutes: 3,
            seconds: 3
        }
    );
    assert_eq!(
        ctx.execution_start_time.start_time_utc,
        "2026-11-30T07:06:12.000Z"
    );
    assert_eq!(
        ctx.execution_start_time.start_time_local1,
        "2026-11-30 07:06:12"
    );
    assert_eq!(
        ctx.execution_start_time.start_time_local2,
        "11/30/2026, 7:06:12 AM"
    );
    assert_eq!(
        ctx.execution_start_time.start_time_local3,
        "Nov 30, 2026, 7:06:12 AM"
    );
    assert_eq!(
        ctx.execution_start_time.start_time_local4,
        "November 30, 2026 at 7:06:12 AM UTC"
    );
    assert_eq!(
        ctx.execution_stop_time.stop_time_local1,
        "2026-11-30 08:09:15"
    );
    assert_eq!(
        ctx.execution_creation_time.creation_time_utc,
        "2026-11-30T07:06:10Z"
    );
    assert_eq!(ctx.script_log_head, "line 1\nline 2");
    assert_eq!(ctx.script_log_tail, "line 3\nline 4\nline \"5\"");
    assert_eq!(ctx.script_log_head_count, 2);
    assert_eq!(ctx.script_log_tail_count, 3);
    assert_eq!(ctx.script_log_size_rows, "5");
    assert_eq!(ctx.script_log_size_characters, "32");
    assert_eq!(ctx.qlik_sense_qmc, "https://acme.eu.qlikcloud.com/console");
    assert_eq!(ctx.qlik_sense_hub, "https://acme.eu.qlikcloud.com/hub");
    assert_eq!(ctx.app_owner_name, "Anna Andersson");
    assert_eq!(ctx.app_owner_email, "anna@example.com");
    assert_eq!(ctx.app_owner_user_id, "6319a8f0b3e1a2001f3c9d41");
    assert_eq!(ctx.user_name, "Anna Andersson");
    assert_eq!(ctx.event_id, "0b7a6c55-8d2e-4f31-a6b4-3e9c1d2f7a80");
    assert_eq!(ctx.event_type, "com.qlik.v1.app.reload.finished");
    assert_eq!(ctx.envelope_format, "cloudevents");
    assert_eq!(ctx.peak_memory_bytes, "50,331,648");
    assert_eq!(ctx.size_memory_bytes, "18,234,567");
    assert_eq!(ctx.usage_duration, Some(3870));
    assert!(ctx.missing.is_empty());
}

#[test]
fn serializes_with_butler_field_names_and_shapes() {
    let envelope = Envelope::parse(APP_RELOAD.as_bytes()).expect("envelope");
    let reload = envelope.reload().expect("reload event");
    let ctx = context_at_acme(&envelope, &reload, &full_enrichment()).with_generic_urls(&[
        crate::config::GenericUrl {
            id: "docs".to_owned(),
            link_text: "Docs".to_owned(),
            comment: String::new(),
            url: "https://example.com".to_owned(),
        },
    ]);
    let json = serde_json::to_value(&ctx).expect("json");
    for key in [
        "appName",
        "appId",
        "appUrl",
        "appDescription",
        "appOwnerName",
        "appOwnerEmail",
        "appOwnerUserId",
        "tenantId",
        "tenantUrl",
        "tenantComment",
        "reloadId",
        "status",
        "errorCode",
        "errorMessage",
        "reloadTrigger",
        "executionDuration",
        "executionStartTime",
        "executionStopTime",
        "scriptLogHead",
        "scriptLogTail",
        "scriptLogHeadCount",
        "scriptLogTailCount",
        "scriptLogSizeRows",
        "scriptLogSizeCharacters",
        "qlikSenseQMC",
        "qlikSenseHub",
        "appTags",
        "eventId",
        "eventType",
        "envelopeFormat",
        "missing",
        "genericUrls",
        "logMessage",
        "executionStatusText",
    ] {
        assert!(json.get(key).is_some(), "context lacks {key}");
    }
    assert_eq!(json["executionDuration"]["hours"], 1);
    assert_eq!(
        json["executionStartTime"]["startTimeUTC"],
        "2026-11-30T07:06:12.000Z"
    );
    assert!(json["executionStopTime"]["stopTimeLocal5"].is_string());
    assert_eq!(json["genericUrls"][0]["linkText"], "Docs");

    // A template written for Butler renders with it.
    let mut hb = handlebars::Handlebars::new();
    hb.set_strict_mode(true);
    let out = hb
        .render_template(
            "{{appName}} ({{appId}}) failed after {{executionDuration.hours}}h{{executionDuration.minutes}}m{{executionDuration.seconds}}s at {{executionStartTime.startTimeLocal1}}; owner {{appOwnerName}} ({{appOwnerEmail}}); {{#each genericUrls}}{{this.linkText}}{{/each}}",
            &json,
        )
        .expect("render");
    assert_eq!(
        out,
        format!(
            "Sales dashboard ({APP}) failed after 1h3m3s at 2026-11-30 07:06:12; owner Anna Andersson (anna@example.com); Docs"
        )
    );
}

#[test]
fn reload_finished_event_without_enrichment_still_has_the_essentials() {
    let envelope = Envelope::parse(RELOAD.as_bytes()).expect("envelope");
    let reload = envelope.reload().expect("reload event");
    let mut enrichment = Enrichment::default();
    enrichment.missing.push(Missing {
        what: Resource::ScriptLog,
        reason: "HTTP 503 after 4 attempt(s)".to_owned(),
    });
    let ctx = context_at_acme(&envelope, &reload, &enrichment);
    assert_eq!(ctx.app_id, APP);
    // No name in this event type and none from the API: the id stands in.
    assert_eq!(ctx.app_name, APP);
    assert_eq!(ctx.reload_id, "674ab6e2c1d0f80012e3f4a5");
    assert_eq!(ctx.status, "FAILED");
    assert_eq!(ctx.error_code, "RELOADS-007");
    assert_eq!(ctx.error_message, "The reload failed: script error");
    assert_eq!(ctx.reload_trigger, "chronos");
    // Start time plus durationSeconds gives the stop time.
    assert_eq!(ctx.execution_duration.seconds, 13);
    assert_eq!(
        ctx.execution_start_time.start_time_utc,
        "2026-11-30T07:06:12Z"
    );
    assert_eq!(
        ctx.execution_stop_time.stop_time_utc,
        "2026-11-30T07:06:25Z"
    );
    assert_eq!(ctx.app_owner_name, "Unknown");
    assert_eq!(ctx.app_owner_email, "");
    assert_eq!(ctx.script_log_head, "");
    assert_eq!(ctx.script_log_size_rows, "0");
    assert_eq!(ctx.missing, ["script log: HTTP 503 after 4 attempt(s)"]);
}

#[test]
fn a_duration_past_the_end_of_the_calendar_leaves_the_stop_time_unknown() {
    // Issue 9: `durationSeconds: 1e300` (and a reload the tenant does not know, so the start
    // time comes from the event) used to overflow `OffsetDateTime + Duration` and panic.
    for duration in ["1e300", "9.3e15", "1.8e19", "-1e300"] {
        let body = RELOAD.replace(
            "\"durationSeconds\":13",
            &format!("\"durationSeconds\":{duration}"),
        );
        assert_ne!(body, RELOAD, "the sample has durationSeconds: 13");
        let envelope = Envelope::parse(body.as_bytes()).expect("envelope");
        let reload = envelope.reload().expect("reload event");
        let ctx = context_at_acme(&envelope, &reload, &Enrichment::default());
        assert_eq!(
            ctx.execution_start_time.start_time_utc,
            "2026-11-30T07:06:12Z"
        );
        if !duration.starts_with('-') {
            assert_eq!(ctx.execution_stop_time.stop_time_utc, "", "{duration}");
        }
    }
}

#[test]
fn legacy_envelope_gives_the_same_context() {
    let legacy = Envelope::parse(LEGACY.as_bytes()).expect("legacy");
    let ce = Envelope::parse(APP_RELOAD.as_bytes()).expect("cloudevents");
    let t = tenant("https://acme.eu.qlikcloud.com");
    let e = full_enrichment();
    let mut a = build_context(&legacy, &legacy.reload().expect("reload"), &t, &e, 5, 5);
    let b = build_context(&ce, &ce.reload().expect("reload"), &t, &e, 5, 5);
    assert_eq!(a.envelope_format, "legacy");
    a.envelope_format = b.envelope_format.clone();
    assert_eq!(a.app_id, b.app_id);
    assert_eq!(a.reload_id, "66e5727b9f3c8a0013a4b5c6");
    assert_eq!(a.tenant_id, b.tenant_id);
    assert_eq!(a.app_name, b.app_name);
    assert_eq!(a.owner_id, b.owner_id);
    assert_eq!(a.user_id, b.user_id);
    assert_eq!(a.space_id, b.space_id);
    assert_eq!(a.source, "com.qlik/engine");
    // Butler's templates show `eventTypeVersion`; every envelope format fills it.
    assert_eq!(a.event_type_version, "1.0.0");
    assert_eq!(b.event_type_version, "1.0.0");
    assert_eq!(a.to_json()["eventTypeVersion"], "1.0.0");
}

#[test]
fn app_url_percent_encodes_the_app_id() {
    let mut body: serde_json::Value = serde_json::from_str(APP_RELOAD).expect("json");
    let hostile = "x/../../admin?y=1#z <a>";
    body["toplevelresourceid"] = hostile.into();
    let envelope = Envelope::parse(body.to_string().as_bytes()).expect("envelope");
    let reload = envelope.reload().expect("reload");
    let ctx = context_at_acme(&envelope, &reload, &Enrichment::default());
    assert_eq!(ctx.app_id, hostile);
    assert_eq!(
        ctx.app_url,
        "https://acme.eu.qlikcloud.com/sense/app/x%2F%2E%2E%2F%2E%2E%2Fadmin%3Fy%3D1%23z%20%3Ca%3E"
    );
}

#[test]
fn json_template_preparation_escapes_and_truncates_like_butler() {
    let ctx = AlertContext {
        script_log_head: "a \"quoted\"\r\nline\tx \\ y".to_owned(),
        script_log_tail: "x".repeat(CHAT_SCRIPT_LOG_MAX_CHARS + 10),
        log_message: "multi\nline".to_owned(),
        ..Default::default()
    };
    let prepared = ctx.for_json_template();
    assert_eq!(prepared.script_log_head, r#"a \"quoted\"\nline\tx \\ y"#);
    assert_eq!(prepared.log_message, r"multi\nline");
    assert!(
        prepared
            .script_log_tail
            .starts_with(r"----Script log truncated by Butler----\n")
    );
    // Valid inside a JSON string literal.
    let doc = format!("{{\"t\": \"{}\"}}", prepared.script_log_head);
    let parsed: serde_json::Value = serde_json::from_str(&doc).expect("valid JSON");
    assert_eq!(parsed["t"], "a \"quoted\"\nline\tx \\ y");
}

#[test]
fn script_log_parts_count_like_butler() {
    let parts = script_log_parts("", 3, 3);
    assert_eq!((parts.rows, parts.characters), (0, 0));
    let parts = script_log_parts("one\ntwo\nthree", 0, 1);
    assert_eq!(parts.head, "");
    assert_eq!(parts.tail, "three");
    assert_eq!(parts.rows, 3);
    let parts = script_log_parts("one\ntwo", 10, 10);
    assert_eq!(parts.head, "one\ntwo");
    assert_eq!(parts.tail, "one\ntwo");
}

#[test]
fn thousands() {
    assert_eq!(group_thousands(0), "0");
    assert_eq!(group_thousands(999), "999");
    assert_eq!(group_thousands(1000), "1,000");
    assert_eq!(group_thousands(50_331_648), "50,331,648");
}
