//! `consumer preview` (issue 18): one event through parsing, tenant match, enrichment (the fake
//! tenant) and every destination's real templates, printed per destination; a broken template
//! names its destination and line; an event that is not a failed reload of a configured tenant
//! is refused precisely; and nothing is sent or stored: the receivers, the SMTP port and the
//! MQTT alert topic get nothing, and neither state nor dead-letter files appear.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;
use support::fake_tenant::{self, FakeTenant};
use support::*;

const SMTP_PASSWORD: &str = "smtp-PREVIEW-secret-5521";
const RECIPIENT: &str = "ops@example.com";

/// Butler's email alert through an SMTP server on `port` (nothing answers there unless a test
/// listens).
fn add_email(setup: &mut Setup, port: u16) {
    setup.edit(|config| {
        config
            .butler(
                "emailNotification",
                json!({
                    "enable": true,
                    "smtp": {
                        "host": "127.0.0.1",
                        "port": port,
                        "secure": false,
                        "tls": {"ignoreTLS": true, "requireTLS": false, "rejectUnauthorized": true},
                        "auth": {"enable": true, "user": "butler", "password": SMTP_PASSWORD},
                    }
                }),
            )
            .tenant(
                "alert.emailNotification.reloadAppFailure",
                json!({
                    "enable": true,
                    "rateLimit": 300,
                    "headScriptLogLines": 3,
                    "tailScriptLogLines": 2,
                    "priority": "high",
                    "subject": "❌ Qlik Cloud reload failed: \"{{appName}}\"",
                    "bodyFileDirectory": templates_dir().display().to_string(),
                    "htmlTemplateFile": "email-failed-reload-qscloud",
                    "fromAddress": "Qlik Sense (no-reply) <qliksense-noreply@example.com>",
                    "recipients": [RECIPIENT],
                }),
            );
    });
}

/// The repository's sample event, written where the test can hand it to `--event`.
fn event_file(setup: &Setup, body: &[u8]) -> PathBuf {
    let path = setup
        .dir
        .path()
        .join(format!("{}.json", testkit::unique("event")));
    std::fs::write(&path, body).expect("write event");
    path
}

fn sample_event(setup: &Setup) -> PathBuf {
    event_file(
        setup,
        &testkit::sample("app-reload-failed.cloudevents.json"),
    )
}

async fn preview(setup: &Setup, event: &Path, more: &[&str]) -> (i32, String, String) {
    let event = event.display().to_string();
    let mut args = vec!["preview", "--event", event.as_str()];
    args.extend_from_slice(more);
    run_command(setup, &args).await
}

/// Files under `dir` (none when it does not exist).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .flat_map(|e| {
            let path = e.path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

/// The section of `stdout` headed by `=== name ===`, up to the next heading.
fn section<'a>(stdout: &'a str, name: &str) -> &'a str {
    let heading = format!("=== {name} ===\n");
    let start = stdout
        .find(&heading)
        .unwrap_or_else(|| panic!("no section {name} in:\n{stdout}"))
        + heading.len();
    let rest = &stdout[start..];
    &rest[..rest.find("\n=== ").unwrap_or(rest.len())]
}

#[tokio::test]
async fn preview_shows_what_each_destination_would_receive_and_sends_nothing() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let slack = Receiver::start().await;
    let teams = Receiver::start().await;
    let webhook = Receiver::start().await;
    // A port that takes connections but is never served: any SMTP attempt would show here.
    let smtp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    smtp.set_nonblocking(true).expect("non-blocking");
    let smtp_port = smtp.local_addr().expect("address").port();
    let alert_root = testkit::unique("qscloud-alerts");
    let mut setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/slack-token")),
            slack_formatted: true,
            teams: Some(teams.url("webhookb2/teams-token")),
            teams_formatted: true,
            mqtt_topic: Some(format!("{alert_root}/{{tenantId}}/{{appId}}")),
            script_log: true,
            ..Destinations::one_webhook(webhook.url("hook")).through(&tenant)
        },
    );
    add_email(&mut setup, smtp_port);
    let mut alerts = testkit::Subscriber::connect(&broker, &format!("{alert_root}/#")).await;
    let event = sample_event(&setup);

    let (code, stdout, stderr) = preview(&setup, &event, &[]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    // Slack and Teams: the shipped templates, filled from the fake tenant (owner, log tail).
    let log_tail = "Execution finished.";
    let slack_json = section(&stdout, &format!("slack:{TENANT}"));
    let message: serde_json::Value = serde_json::from_str(slack_json).expect("Slack JSON");
    assert!(message["blocks"].is_array(), "{slack_json}");
    assert!(slack_json.contains("Sales dashboard"), "{slack_json}");
    assert!(slack_json.contains(log_tail), "{slack_json}");
    let teams_json = section(&stdout, &format!("teams:{TENANT}"));
    let card: serde_json::Value = serde_json::from_str(teams_json).expect("Teams JSON");
    assert_eq!(card["type"], "message", "{teams_json}");
    assert!(teams_json.contains("Anna Andersson"), "{teams_json}");
    assert!(teams_json.contains(log_tail), "{teams_json}");

    // Email: headers, then the text and HTML parts.
    let email = section(&stdout, &format!("email:{TENANT}/{RECIPIENT}"));
    for line in [
        "From: \"Qlik Sense (no-reply)\" <qliksense-noreply@example.com>",
        &format!("To: {RECIPIENT}"),
        "Subject: ❌ Qlik Cloud reload failed: \"Sales dashboard\"",
        "X-Priority: 1 (Highest)",
        "Importance: High",
        "--- text/plain ---",
        "--- text/html ---",
    ] {
        assert!(email.contains(line), "{line} not in:\n{email}");
    }
    assert!(
        email.contains("<html") || email.contains("<table"),
        "{email}"
    );

    // Webhook: the body and the header names, never their values.
    let hook = section(&stdout, "webhook:ops");
    assert!(hook.contains("Authorization: ***"), "{hook}");
    assert!(hook.contains("Idempotency-Key: ***"), "{hook}");
    assert!(
        hook.contains("\"appOwnerEmail\": \"anna.andersson@example.com\""),
        "{hook}"
    );

    // MQTT: topic and payload.
    let mqtt = section(&stdout, "mqtt");
    assert!(
        mqtt.contains(&format!(
            "topic: {alert_root}/{TENANT}/{}",
            fake_tenant::APP_ID
        )),
        "{mqtt}"
    );
    assert!(mqtt.contains("\"appName\": \"Sales dashboard\""), "{mqtt}");

    // The log line's fields, and the script log's path.
    let log = section(&stdout, "log");
    assert!(log.contains("app_name=\"Sales dashboard\""), "{log}");
    assert!(log.contains("Qlik Cloud app reload failed"), "{log}");
    let disk = section(&stdout, "script-log-disk");
    let expected = setup.script_log_dir.join("2026-11-30").join(format!(
        "2026-11-30T07-06-22_appId={}_reloadId={}.log",
        fake_tenant::APP_ID,
        fake_tenant::RELOAD_ID
    ));
    assert!(
        disk.contains(&format!("would write {}", expected.display())),
        "{disk}"
    );
    assert!(
        disk.contains("the script log from the tenant API"),
        "{disk}"
    );

    // No secret anywhere.
    for secret in [
        SMTP_PASSWORD,
        "webhook-header-secret",
        "slack-token",
        "teams-token",
        tenant.jwt().as_str(),
    ] {
        assert!(!stdout.contains(secret), "{secret} in stdout");
        assert!(!stderr.contains(secret), "{secret} in stderr");
    }

    // Nothing sent …
    assert_eq!(slack.requests(), 0);
    assert_eq!(teams.requests(), 0);
    assert_eq!(webhook.requests(), 0);
    assert!(
        matches!(smtp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "preview connected to the SMTP server"
    );
    assert_eq!(alerts.next(Duration::from_secs(1)).await, None);
    // … and nothing stored: no state (dedupe, rate limits, digests), nothing parked, no log file.
    assert_eq!(files_under(&setup.state_dir), Vec::<PathBuf>::new());
    assert_eq!(files_under(&setup.dead_letter_dir), Vec::<PathBuf>::new());
    assert_eq!(files_under(&setup.script_log_dir), Vec::<PathBuf>::new());

    // Twice the same: nothing was remembered (no dedupe, no rate-limit window).
    let (again, second, _) = preview(&setup, &event, &[]).await;
    assert_eq!(again, 0);
    assert_eq!(section(&second, "log"), log);
}

#[tokio::test]
async fn destination_picks_one_destination_by_name_or_prefix() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let slack = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/slack-token")),
            slack_formatted: true,
            ..Destinations::one_webhook("http://127.0.0.1:9/hook").through(&tenant)
        },
    );
    let event = sample_event(&setup);
    let (code, stdout, stderr) = preview(&setup, &event, &["--destination", "slack"]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(
        stdout.contains(&format!("=== slack:{TENANT} ===")),
        "{stdout}"
    );
    assert!(!stdout.contains("=== log ==="), "{stdout}");
    assert!(!stdout.contains("=== webhook:"), "{stdout}");

    let (code, stdout, _) = preview(&setup, &event, &["--destination", "log"]).await;
    assert_eq!(code, 0);
    assert!(stdout.starts_with("=== log ===\n"), "{stdout}");
    assert!(!stdout.contains("=== slack:"), "{stdout}");

    let (code, _, stderr) = preview(&setup, &event, &["--destination", "teams"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("no destination named \"teams\""),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("slack:{TENANT}")), "{stderr}");
    assert_eq!(slack.requests(), 0);
}

#[tokio::test]
async fn a_broken_template_names_the_destination_and_the_line() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let slack = Receiver::start().await;
    let mut setup = write_config(
        &broker,
        &Destinations {
            slack: Some(slack.url("services/slack-token")),
            slack_formatted: true,
            ..Destinations::one_webhook("http://127.0.0.1:9/hook").through(&tenant)
        },
    );
    let broken = setup.dir.path().join("broken-slack.handlebars");
    std::fs::write(
        &broken,
        "{\n  \"text\": \"Reload failed\",\n  \"blocks\": [{{#each nothing}]\n}\n",
    )
    .expect("write template");
    let broken_path = broken.display().to_string();
    setup.edit(|config| {
        config.tenant(
            "alert.slackNotification.reloadAppFailure.templateFile",
            broken_path.as_str(),
        );
    });
    let event = sample_event(&setup);
    let (code, stdout, stderr) = preview(&setup, &event, &[]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let slack_name = format!("slack:{TENANT}");
    let failure = stderr
        .lines()
        .find(|l| l.starts_with(&format!("preview: {slack_name}:")))
        .unwrap_or_else(|| panic!("no failure line for {slack_name}:\n{stderr}"));
    assert!(failure.contains("broken-slack.handlebars"), "{failure}");
    assert!(
        failure.contains("line 3, column"),
        "line 3 not named: {failure}"
    );
    // The other destinations still rendered.
    assert!(
        section(&stdout, "log").contains("Sales dashboard"),
        "{stdout}"
    );
    assert!(
        section(&stdout, "webhook:ops").contains("\"appId\""),
        "{stdout}"
    );
    assert_eq!(slack.requests(), 0);
}

#[tokio::test]
async fn an_event_that_is_not_a_failed_reload_of_a_configured_tenant_is_refused_precisely() {
    let broker = testkit::embedded();
    let webhook = Receiver::start().await;
    let setup = write_config(&broker, &Destinations::one_webhook(webhook.url("hook")));

    let other = event_file(
        &setup,
        &event(
            Sample::CloudEventsAppReload,
            "e-other",
            OTHER_TENANT,
            "app-1",
        ),
    );
    let (code, stdout, stderr) = preview(&setup, &other, &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "is from tenant \"{OTHER_TENANT}\", which is not configured (configured: {TENANT})"
        )),
        "{stderr}"
    );

    let ok = event_file(&setup, &succeeded_event("e-ok", "app-1"));
    let (code, _, stderr) = preview(&setup, &ok, &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("did not fail"), "{stderr}");

    let garbage = event_file(&setup, b"{\"hello\": 1}");
    let (code, _, stderr) = preview(&setup, &garbage, &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is not a Qlik event"), "{stderr}");

    let (code, _, stderr) = preview(&setup, &setup.dir.path().join("absent.json"), &[]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("cannot read the event file"), "{stderr}");
    assert_eq!(webhook.requests(), 0);
}

#[tokio::test]
async fn with_the_tenant_api_down_the_preview_says_what_is_missing() {
    let broker = testkit::embedded();
    let webhook = Receiver::start().await;
    let setup = write_config(
        &broker,
        &Destinations {
            // Enrichment on, and nothing answers there.
            tenant_url: Some("http://127.0.0.1:9".into()),
            script_log: true,
            ..Destinations::one_webhook(webhook.url("hook"))
        },
    );
    let event = sample_event(&setup);
    let (code, stdout, stderr) = preview(&setup, &event, &[]).await;
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stderr.contains("what is missing"), "{stderr}");
    let hook = section(&stdout, "webhook:ops");
    let body_start = hook.find('{').expect("JSON body");
    let body: serde_json::Value = serde_json::from_str(&hook[body_start..]).expect("JSON");
    assert!(
        body["missing"].as_array().is_some_and(|m| !m.is_empty()),
        "{hook}"
    );
    assert!(
        section(&stdout, "script-log-disk").contains("no script log"),
        "{stdout}"
    );
    assert_eq!(webhook.requests(), 0);
}

#[tokio::test]
async fn a_template_that_renders_no_json_fails_its_destination_only() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let teams = Receiver::start().await;
    let mut setup = write_config(
        &broker,
        &Destinations {
            teams: Some(teams.url("webhookb2/teams-token")),
            teams_formatted: true,
            ..Destinations::one_webhook("http://127.0.0.1:9/hook").through(&tenant)
        },
    );
    // Compiles, but what it renders is not JSON (a missing comma).
    let bad = setup.dir.path().join("bad-teams.handlebars");
    std::fs::write(
        &bad,
        "{\n  \"type\": \"message\"\n  \"text\": \"{{appName}}\"\n}\n",
    )
    .expect("write template");
    let bad_path = bad.display().to_string();
    setup.edit(|config| {
        config.tenant(
            "alert.teamsNotification.reloadAppFailure.templateFile",
            bad_path.as_str(),
        );
    });
    let event = sample_event(&setup);
    let (code, stdout, stderr) = preview(&setup, &event, &[]).await;
    assert_eq!(code, 1, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains(&format!(
            "preview: teams:{TENANT}: Teams template: rendered template is not a JSON object"
        )),
        "{stderr}"
    );
    assert!(section(&stdout, &format!("teams:{TENANT}")).starts_with("FAILED: "));
    assert!(
        section(&stdout, "log").contains("Sales dashboard"),
        "{stdout}"
    );
    assert_eq!(teams.requests(), 0);
}
