//! `consumer webhook …` run as the real binary against a fake of Qlik's webhooks API on
//! 127.0.0.1: the JSON sent, the Bearer JWT, pagination, resending failed deliveries, Qlik's
//! error shapes and exit codes, and that neither the JWT nor the webhook secret is ever printed.

mod support;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::fake_webhooks::{APP_RELOAD, FakeWebhooks, RELOAD, TENANT_ID};
use testkit::butler::{Broker, Config, Tenant};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

const SECRET: &str = "wh-secret-0123456789abcdefghijklmnopqrstuv";
const RELAY_URL: &str = "https://abc123xyz.lambda-url.eu-west-1.on.aws/";
const OTHER_TENANT: &str = "Dev7Tenant0000000000000000000001";

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

/// A Butler file with the fake as the tenant (and optionally a second tenant), fast retries.
fn setup(api: &FakeWebhooks, jwt: &str, second: Option<&FakeWebhooks>) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut files = Config::new(
        &Broker::new("127.0.0.1", 1),
        "qscloud",
        &Tenant::new(TENANT_ID, &api.url(), jwt),
    );
    files
        .consumer(
            "stateDirectory",
            dir.path().join("state").display().to_string(),
        )
        .consumer(
            "enrichment",
            json!({
                "timeoutSeconds": 5,
                "maxRetries": 2,
                "maxRetryAfterSeconds": 1,
                "initialBackoffMs": 10,
            }),
        );
    if let Some(other) = second {
        files.another_tenant(&Tenant::new(OTHER_TENANT, &other.url(), &other.jwt()));
    }
    let text = files.one_file_yaml();
    let config = dir.path().join("butler.yaml");
    std::fs::write(&config, text).expect("write config");
    Setup { _dir: dir, config }
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The exit code, with all the output shown when it differs.
    #[track_caller]
    fn assert_code(&self, code: i32) {
        assert_eq!(self.code, code, "{}", self.all());
    }

    #[track_caller]
    fn assert_stdout_has(&self, needle: &str) {
        assert!(self.stdout.contains(needle), "{}", self.stdout);
    }

    #[track_caller]
    fn assert_stderr_has(&self, needle: &str) {
        assert!(self.stderr.contains(needle), "{}", self.stderr);
    }
}

/// Runs `consumer webhook <args> --config …` with `WEBHOOK_SECRET` as given and `stdin`.
async fn webhook(setup: &Setup, args: &[&str], secret: Option<&str>, stdin: Option<&str>) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer"));
    command
        .arg("webhook")
        .args(args)
        .arg("--config")
        .arg(&setup.config)
        .env("NO_COLOR", "1")
        .env_remove("WEBHOOK_SECRET")
        .env_remove("QLIK_TENANT_JWT")
        .env_remove("CONSUMER_CONFIG")
        .env_remove("CONSUMER_EXTENSIONS")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(secret) = secret {
        command.env("WEBHOOK_SECRET", secret);
    }
    let mut child = command.spawn().expect("consumer runs");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("consumer finishes")
        .expect("consumer output");
    if std::env::var_os("SHOW_WEBHOOK_OUTPUT").is_some() {
        eprintln!(
            "=== {args:?} -> {:?}\n{}{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `consumer webhook create --name relay --url <RELAY_URL> <extra>` with `WEBHOOK_SECRET` set.
async fn create_relay(setup: &Setup, extra: &[&str]) -> Run {
    let args = [
        &["create", "--name", "relay", "--url", RELAY_URL][..],
        extra,
    ]
    .concat();
    webhook(setup, &args, Some(SECRET), None).await
}

/// `consumer webhook <args>` with no secret and no stdin.
async fn plain(setup: &Setup, args: &[&str]) -> Run {
    webhook(setup, args, None, None).await
}

fn assert_no_secrets(run: &Run, jwt: &str) {
    let all = run.all();
    assert!(!all.contains(SECRET), "secret printed:\n{all}");
    assert!(!all.contains(jwt), "JWT printed:\n{all}");
    // Not even a recognizable part of them.
    assert!(!all.contains(&jwt[..20]), "JWT part printed:\n{all}");
    assert!(!all.contains(&SECRET[..20]), "secret part printed:\n{all}");
}

fn minutes_ago(m: i64) -> OffsetDateTime {
    OffsetDateTime::now_utc() - time::Duration::minutes(m)
}

fn posts(api: &FakeWebhooks, path: &str) -> Vec<Value> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .filter_map(|r| r.body)
        .collect()
}

#[tokio::test]
async fn create_sends_one_filtered_webhook_for_app_reloads_and_one_for_reloads() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    let run = create_relay(&s, &["--description", "to MQTT"]).await;
    run.assert_code(0);
    assert_no_secrets(&run, &api.jwt());

    let creates: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v1/webhooks")
        .collect();
    assert_eq!(creates.len(), 2, "{creates:?}");
    for r in &creates {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {}", api.jwt()).as_str())
        );
    }
    let first = creates[0].body.clone().expect("json body");
    assert_eq!(first["name"], "relay (app reload failed)");
    assert_eq!(first["url"], RELAY_URL);
    assert_eq!(first["eventTypes"], json!([APP_RELOAD]));
    assert_eq!(first["filter"], r#"data.status eq "error""#);
    assert_eq!(first["secret"], SECRET);
    assert_eq!(first["enabled"], true);
    assert_eq!(first["level"], "tenant");
    assert_eq!(first["description"], "to MQTT");
    let second = creates[1].body.clone().expect("json body");
    assert_eq!(second["name"], "relay (reload finished)");
    assert_eq!(second["eventTypes"], json!([RELOAD]));
    assert!(second.get("filter").is_none(), "{second}");
    assert_eq!(second["secret"], SECRET);

    // Both ids and settings are printed; the secret only as "set".
    for hook in api.webhooks() {
        let id = hook["id"].as_str().expect("id");
        run.assert_stdout_has(&format!("created webhook {id}"));
    }
    run.assert_stdout_has(r#"filter:       data.status eq "error""#);
    run.assert_stdout_has("secret:       set (not shown)");
    run.assert_stderr_has("2 webhook(s) created");

    // A request for one of the types finds its webhook; the other one's, for other event
    // types only, is pointed out and left alone.
    let again = create_relay(&s, &["--event-type", RELOAD]).await;
    again.assert_code(0);
    again.assert_stdout_has("existing webhook");
    again.assert_stderr_has("also sends com.qlik.v1.app.reload.finished to this URL");
    assert_eq!(posts(&api, "/api/v1/webhooks").len(), 2, "nothing created");
    assert_no_secrets(&again, &api.jwt());
}

fn relay_hooks(api: &FakeWebhooks) -> Vec<Value> {
    api.webhooks()
        .into_iter()
        .filter(|h| h["url"] == RELAY_URL)
        .collect()
}

#[tokio::test]
async fn create_twice_makes_the_webhooks_once_and_force_makes_them_again() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    let first = create_relay(&s, &[]).await;
    first.assert_code(0);
    assert_eq!(relay_hooks(&api).len(), 2);
    // The broker in this configuration does not answer: said, and the create goes on.
    first.assert_stderr_has("cannot tell whether the consumer's session exists");
    first.assert_stderr_has("cannot reach the MQTT broker");

    let second = create_relay(&s, &[]).await;
    second.assert_code(0);
    assert_eq!(relay_hooks(&api).len(), 2, "{}", second.all());
    assert_eq!(
        posts(&api, "/api/v1/webhooks").len(),
        2,
        "no create request"
    );
    for hook in relay_hooks(&api) {
        let id = hook["id"].as_str().expect("id");
        second.assert_stdout_has(&format!("existing webhook {id}"));
        second.assert_stderr_has(&format!(
            "webhook {id} \"{}\" already sends",
            hook["name"].as_str().expect("name")
        ));
    }
    second.assert_stderr_has("0 webhook(s) created, 2 already there");
    assert_no_secrets(&second, &api.jwt());

    // A disabled one is named as such, with the command that enables it.
    let id = relay_hooks(&api)[1]["id"].as_str().expect("id").to_owned();
    plain(&s, &["disable", "--id", &id]).await.assert_code(0);
    let third = create_relay(&s, &["--json"]).await;
    third.assert_code(0);
    third.assert_stderr_has(&format!(
        "DISABLED: enable it with `consumer webhook enable --id {id}`"
    ));
    let listed: Value = serde_json::from_str(&third.stdout).expect("JSON array");
    assert_eq!(listed.as_array().map(Vec::len), Some(2), "{listed}");
    assert_eq!(relay_hooks(&api).len(), 2);

    let forced = create_relay(&s, &["--force"]).await;
    forced.assert_code(0);
    assert_eq!(relay_hooks(&api).len(), 4, "{}", forced.all());
    forced.assert_stderr_has("events will arrive twice");
}

#[tokio::test]
async fn create_completes_a_half_made_set_up_and_refuses_other_event_types_to_the_url() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    let app = api.add_webhook(json!({
        "name": "relay (app reload failed)", "url": RELAY_URL, "eventTypes": [APP_RELOAD],
        "filter": "data.status eq \"error\"", "enabled": true, "secret": SECRET,
    }));
    let run = create_relay(&s, &[]).await;
    run.assert_code(0);
    let creates = posts(&api, "/api/v1/webhooks");
    assert_eq!(creates.len(), 1, "only the missing one: {creates:?}");
    assert_eq!(creates[0]["eventTypes"], json!([RELOAD]));
    run.assert_stdout_has(&format!("existing webhook {app}"));
    run.assert_stderr_has("1 webhook(s) created, 1 already there");

    // One webhook with both types to the same URL is not what a default create makes.
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    let both = api.add_webhook(json!({
        "name": "old relay", "url": RELAY_URL, "eventTypes": [APP_RELOAD, RELOAD],
        "enabled": true, "secret": SECRET,
    }));
    let run = create_relay(&s, &[]).await;
    run.assert_code(65);
    assert!(
        posts(&api, "/api/v1/webhooks").is_empty(),
        "nothing created"
    );
    run.assert_stderr_has(&format!(
        "webhook {both} \"old relay\" (enabled) already sends"
    ));
    run.assert_stderr_has("--force");
    run.assert_stderr_has(&format!("consumer webhook delete --id {both}"));
    assert_no_secrets(&run, &api.jwt());

    // The same types in one webhook, as --no-filter asks, are that webhook.
    let run = create_relay(&s, &["--no-filter"]).await;
    run.assert_code(0);
    assert!(posts(&api, "/api/v1/webhooks").is_empty());

    let run = create_relay(&s, &["--force"]).await;
    run.assert_code(0);
    assert_eq!(posts(&api, "/api/v1/webhooks").len(), 2);
}

#[tokio::test]
async fn create_one_type_disabled_with_a_secret_from_stdin_and_an_encrypted_header() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    let mut command = vec![
        "create",
        "--name",
        "relay",
        "--url",
        RELAY_URL,
        "--event-type",
        APP_RELOAD,
        "--disabled",
        "--json",
    ];
    // --header-env needs the variable: without it, a usage error and nothing sent.
    command.extend(["--header-env", "X-Relay-Token=RELAY_TOKEN_FOR_TEST_UNSET"]);
    let run = webhook(&s, &command, None, Some(&format!("{SECRET}\n"))).await;
    run.assert_code(2);
    assert!(posts(&api, "/api/v1/webhooks").is_empty());

    command.truncate(command.len() - 2);
    let run = webhook(&s, &command, None, Some(&format!("{SECRET}\n"))).await;
    run.assert_code(0);
    assert_no_secrets(&run, &api.jwt());
    let bodies = posts(&api, "/api/v1/webhooks");
    assert_eq!(bodies.len(), 1);
    assert_eq!(bodies[0]["name"], "relay");
    assert_eq!(bodies[0]["enabled"], false);
    assert_eq!(bodies[0]["eventTypes"], json!([APP_RELOAD]));
    assert_eq!(bodies[0]["filter"], r#"data.status eq "error""#);
    assert_eq!(bodies[0]["secret"], SECRET, "the newline is not part of it");
    let printed: Value = serde_json::from_str(&run.stdout).expect("JSON output");
    assert_eq!(printed[0]["enabled"], false);
    assert_eq!(printed[0]["name"], "relay");
    assert!(printed[0].get("secret").is_none(), "{printed}");
}

#[tokio::test]
async fn create_refuses_bad_secrets_urls_and_filters_before_calling_qlik() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    let base = ["create", "--name", "relay", "--url", RELAY_URL];
    let long = "x".repeat(65);
    // (arguments, WEBHOOK_SECRET, stdin, expected message)
    type Case<'a> = (Vec<&'a str>, Option<&'a str>, Option<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            base.to_vec(),
            Some("too-short-secret"),
            None,
            "32 to 64 characters",
        ),
        (base.to_vec(), Some(long.as_str()), None, "it has 65"),
        (
            base.to_vec(),
            Some(
                "wh-secret-0123456789abcdefghijklmnopqrstuv,wh-secret-9876543210abcdefghijklmnopq",
            ),
            None,
            "comma",
        ),
        (base.to_vec(), None, None, "no webhook secret"),
        (base.to_vec(), None, Some("short\n"), "32 to 64 characters"),
        (
            vec![
                "create",
                "--name",
                "relay",
                "--url",
                "http://relay.example.com/",
            ],
            Some(SECRET),
            None,
            "https",
        ),
        (
            [&base[..], &["--filter", r#"data.status eq "error""#][..]].concat(),
            Some(SECRET),
            None,
            "only event type",
        ),
    ];
    for (args, secret, stdin, expected) in cases {
        let run = webhook(&s, &args, secret, stdin).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert_no_secrets(&run, &api.jwt());
        if let Some(secret) = secret.filter(|s| s.len() > 8) {
            assert!(!run.all().contains(secret), "{args:?} printed the secret");
        }
    }
    assert!(posts(&api, "/api/v1/webhooks").is_empty());
    // There is no option that takes the secret itself.
    let run = webhook(
        &s,
        &[&base[..], &["--secret", SECRET][..]].concat(),
        None,
        None,
    )
    .await;
    assert_eq!(run.code, 2);
}

#[tokio::test]
async fn list_shows_enabled_state_and_disabled_reason_across_pages() {
    let api = FakeWebhooks::start().await;
    api.set_page_size(2);
    let enabled = api.add_webhook(json!({
        "name": "relay (app reload failed)", "url": RELAY_URL, "eventTypes": [APP_RELOAD],
        "filter": "data.status eq \"error\"", "enabled": true, "secret": SECRET,
        "headers": {"X-Relay-Token": "header-value-must-not-show"},
        "updatedAt": "2026-11-30T08:00:00.000Z"
    }));
    let disabled = api.add_webhook(json!({
        "name": "relay (reload finished)", "url": RELAY_URL, "eventTypes": [RELOAD],
        "enabled": false, "secret": SECRET,
        "disabledReason": "Webhook disabled after too many failed deliveries",
        "disabledReasonCode": "WEBHOOK-DISABLED-FAILURES",
        "updatedAt": "2026-11-30T09:00:00.000Z"
    }));
    for i in 0..3 {
        api.add_webhook(json!({"name": format!("automation {i}"),
            "url": "https://hooks.example.com/x", "eventTypes": ["com.qlik.v1.app.created"],
            "enabled": true}));
    }
    let s = setup(&api, &api.jwt(), None);
    let run = plain(&s, &["list"]).await;
    run.assert_code(0);
    assert_no_secrets(&run, &api.jwt());
    assert!(
        !run.all().contains("header-value-must-not-show"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains(&enabled) && run.stdout.contains(&disabled));
    assert!(
        run.stdout.contains("automation 2"),
        "last page missing: {}",
        run.stdout
    );
    run.assert_stdout_has("enabled:      no, disabled: Webhook disabled after too many failed deliveries (code WEBHOOK-DISABLED-FAILURES)");
    assert!(run.stdout.contains("enabled:      yes"));
    assert!(
        run.stdout
            .contains("headers:      X-Relay-Token (values not shown)")
    );
    assert!(
        run.stdout
            .contains("updated:      2026-11-30T09:00:00.000Z")
    );
    assert!(run.stderr.contains("5 webhook(s)") && run.stderr.contains("1 disabled"));
    let pages = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == "/api/v1/webhooks")
        .count();
    assert_eq!(pages, 3);

    let run = plain(&s, &["list", "--json"]).await;
    run.assert_code(0);
    assert_no_secrets(&run, &api.jwt());
    let hooks: Value = serde_json::from_str(&run.stdout).expect("JSON");
    let hooks = hooks.as_array().expect("array");
    assert_eq!(hooks.len(), 5);
    let d = hooks
        .iter()
        .find(|h| h["id"] == disabled.as_str())
        .expect("disabled one");
    assert_eq!(d["enabled"], false);
    assert_eq!(d["disabledReasonCode"], "WEBHOOK-DISABLED-FAILURES");
    assert_eq!(d["eventTypes"], json!([RELOAD]));
    assert_eq!(d["updatedAt"], "2026-11-30T09:00:00.000Z");
    let e = hooks
        .iter()
        .find(|h| h["id"] == enabled.as_str())
        .expect("enabled one");
    assert_eq!(e["headerNames"], json!(["X-Relay-Token"]));
    assert!(!run.stdout.contains("header-value-must-not-show"));
}

#[tokio::test]
async fn delete_by_id_and_name_and_not_found_exits_66() {
    let api = FakeWebhooks::start().await;
    let a = api.add_webhook(json!({"name": "relay a", "url": RELAY_URL}));
    let b = api.add_webhook(json!({"name": "relay b", "url": RELAY_URL}));
    api.add_webhook(json!({"name": "twin", "url": RELAY_URL}));
    api.add_webhook(json!({"name": "twin", "url": RELAY_URL}));
    let s = setup(&api, &api.jwt(), None);

    let run = plain(&s, &["delete", "--id", &a]).await;
    run.assert_code(0);
    assert!(run.stdout.contains(&format!("deleted webhook {a}")));
    assert!(!api.webhooks().iter().any(|h| h["id"] == a.as_str()));

    let run = plain(&s, &["delete", "--id", &a]).await;
    run.assert_code(66);
    run.assert_stderr_has(&format!("no webhook {a}"));
    run.assert_stderr_has("HTTP 404 Not Found");

    let run = plain(&s, &["delete", "--name", "relay b"]).await;
    run.assert_code(0);
    assert!(!api.webhooks().iter().any(|h| h["id"] == b.as_str()));

    let run = plain(&s, &["delete", "--name", "nope"]).await;
    run.assert_code(66);
    run.assert_stderr_has("no webhook named \"nope\"");

    let run = plain(&s, &["delete", "--name", "twin"]).await;
    run.assert_code(2);
    run.assert_stderr_has("2 webhooks are named \"twin\"");
    assert_eq!(api.webhooks().len(), 2);

    let run = plain(&s, &["delete"]).await;
    run.assert_code(2);
}

#[tokio::test]
async fn enable_and_disable_patch_the_webhook() {
    let api = FakeWebhooks::start().await;
    let id = api.add_webhook(json!({"name": "relay", "url": RELAY_URL, "enabled": false,
        "disabledReason": "too many failures", "disabledReasonCode": "X"}));
    let s = setup(&api, &api.jwt(), None);
    let run = plain(&s, &["enable", "--id", &id]).await;
    run.assert_code(0);
    assert_eq!(api.webhooks()[0]["enabled"], true);
    let patch = api
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .and_then(|r| r.body)
        .expect("patch body");
    assert_eq!(
        patch,
        json!([{"op": "replace", "path": "/enabled", "value": true}])
    );
    let run = plain(&s, &["disable", "--id", &id]).await;
    run.assert_code(0);
    assert_eq!(api.webhooks()[0]["enabled"], false);
    let run = plain(&s, &["enable", "--id", "wh-missing"]).await;
    run.assert_code(66);
}

/// Two relay webhooks and an unrelated one, with deliveries inside and outside a 2h window.
/// Returns (api, relay hook ids, the failed delivery ids that must be resent).
async fn outage() -> (FakeWebhooks, Vec<String>, Vec<String>) {
    let api = FakeWebhooks::start().await;
    api.set_page_size(2);
    let app = api.add_webhook(
        json!({"name": "relay (app reload failed)", "url": RELAY_URL,
        "eventTypes": [APP_RELOAD], "enabled": true}),
    );
    let reload = api.add_webhook(json!({"name": "relay (reload finished)", "url": RELAY_URL,
        "eventTypes": [RELOAD], "enabled": false, "disabledReason": "too many failures"}));
    let other = api.add_webhook(
        json!({"name": "automation", "url": "https://hooks.example.com/x",
        "eventTypes": [APP_RELOAD], "enabled": true}),
    );
    let mut expected = Vec::new();
    // Newest first across pages of 2: f1, s1 | f2, f3 | s4, f4 | old, older | oldest; the
    // fourth page reaches past the 2h window, so the fifth is never read.
    expected.push(api.add_delivery(&app, "fail", minutes_ago(10), "ev-1"));
    api.add_delivery(&app, "success", minutes_ago(20), "ev-ok");
    expected.push(api.add_delivery(&app, "fail", minutes_ago(30), "ev-2"));
    expected.push(api.add_delivery(&app, "fail", minutes_ago(50), "ev-3"));
    api.add_delivery(&app, "success", minutes_ago(60), "ev-4");
    let f4 = api.add_delivery(&app, "fail", minutes_ago(70), "ev-4");
    let old = api.add_delivery(&app, "fail", minutes_ago(180), "ev-old");
    api.add_delivery(&app, "fail", minutes_ago(240), "ev-older");
    api.add_delivery(&app, "fail", minutes_ago(300), "ev-oldest");
    expected.push(api.add_delivery(&reload, "fail", minutes_ago(15), "ev-5"));
    api.add_delivery(&other, "fail", minutes_ago(5), "ev-other");
    assert!(!expected.contains(&f4) && !expected.contains(&old));
    (api, vec![app, reload], expected)
}

#[tokio::test]
async fn resend_failed_resends_each_failed_delivery_in_the_window_once_across_pages() {
    let (api, hooks, expected) = outage().await;
    let s = setup(&api, &api.jwt(), None);
    let run = plain(&s, &["resend-failed", "--since", "2h", "--url", RELAY_URL]).await;
    run.assert_code(0);
    assert_no_secrets(&run, &api.jwt());
    let resent: Vec<String> = api.resends().into_iter().map(|(_, d)| d).collect();
    let unique: HashSet<&String> = resent.iter().collect();
    assert_eq!(unique.len(), resent.len(), "resent twice: {resent:?}");
    assert_eq!(
        unique,
        expected.iter().collect::<HashSet<_>>(),
        "{}",
        run.all()
    );
    for (hook, _) in api.resends() {
        assert!(
            hooks.contains(&hook),
            "resent a delivery of an unrelated webhook"
        );
    }
    run.assert_stderr_has("found 5 failed deliveries");
    run.assert_stderr_has("resent 4");
    run.assert_stderr_has("1 delivered later");
    run.assert_stderr_has("is disabled (too many failures)");
    // Deliveries were read newest first and not beyond the window's page.
    let app_pages: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| {
            r.method == "GET" && r.path == format!("/api/v1/webhooks/{}/deliveries", hooks[0])
        })
        .collect();
    assert_eq!(app_pages.len(), 4, "{app_pages:?}");
    assert!(
        app_pages[0]
            .query
            .as_deref()
            .unwrap_or("")
            .contains("sort=-triggeredAt")
    );
    for r in api.requests() {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {}", api.jwt()).as_str())
        );
    }

    // Run again: Qlik recorded each resend as a successful delivery of the same event, so
    // nothing is resent twice.
    let again = webhook(
        &s,
        &[
            "resend-failed",
            "--since",
            "2h",
            "--id",
            &hooks[0],
            "--id",
            &hooks[1],
        ],
        None,
        None,
    )
    .await;
    again.assert_code(0);
    assert_eq!(api.resends().len(), expected.len(), "{}", again.all());
    again.assert_stderr_has("resent 0");
}

#[tokio::test]
async fn resend_failed_dry_run_resends_nothing() {
    let (api, _, expected) = outage().await;
    let s = setup(&api, &api.jwt(), None);
    let run = plain(
        &s,
        &["resend-failed", "--since", "2h", "--all", "--dry-run"],
    )
    .await;
    run.assert_code(0);
    assert!(api.resends().is_empty());
    assert!(
        !api.requests()
            .iter()
            .any(|r| r.path.ends_with("/actions/resend"))
    );
    for id in &expected {
        run.assert_stdout_has(&format!("would resend {id} "));
    }
    // --all includes the unrelated webhook's failure.
    assert_eq!(
        run.stdout.matches("would resend").count(),
        expected.len() + 1
    );
    run.assert_stderr_has("(dry run)");
}

#[tokio::test]
async fn resend_failed_exits_75_when_a_resend_fails_and_does_not_repeat_it() {
    let (api, _, expected) = outage().await;
    api.fail_resend_of(&expected[1], 503);
    let s = setup(&api, &api.jwt(), None);
    let run = plain(&s, &["resend-failed", "--since", "2h", "--url", RELAY_URL]).await;
    run.assert_code(75);
    assert_eq!(api.resends().len(), expected.len() - 1);
    let attempts = api
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .contains(&format!("/deliveries/{}/actions/resend", expected[1]))
        })
        .count();
    assert_eq!(attempts, 1, "a POST answered 5xx is not repeated");
    run.assert_stdout_has(&format!("FAILED  {}", expected[1]));
    run.assert_stdout_has("HTTP 503 Service Unavailable");
    run.assert_stderr_has("failed 1");
}

#[tokio::test]
async fn resend_failed_needs_a_scope_and_at_most_7_days() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);
    for args in [
        vec!["resend-failed", "--since", "2h"],
        vec!["resend-failed", "--since", "8d", "--all"],
        vec!["resend-failed", "--since", "soon", "--all"],
    ] {
        let run = plain(&s, &args).await;
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
    }
    let run = plain(&s, &["resend-failed", "--since", "8d", "--all"]).await;
    run.assert_stderr_has("7 days");
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn qlik_error_shapes_give_precise_messages_and_exit_codes() {
    let api = FakeWebhooks::start().await;
    let s = setup(&api, &api.jwt(), None);

    // 400 with Qlik's errors[]: title, detail and code are shown; exit 65.
    api.fail_next(200, json!(null)); // consumed by the duplicate check's list: ignored
    api.fail_next(
        400,
        json!([{"code": "WEBHOOKS-7", "title": "Invalid URL",
                "detail": "url must be a fully qualified domain name", "status": "400"}]),
    );
    let run = create_relay(&s, &["--event-type", RELOAD]).await;
    run.assert_code(65);
    run.assert_stderr_has("creating webhook \"relay\": HTTP 400 Bad Request: Invalid URL: url must be a fully qualified domain name (code WEBHOOKS-7)");
    assert_no_secrets(&run, &api.jwt());

    // 403: the JWT is fine but lacks rights; exit 77.
    api.fail_next(403, json!(null));
    let run = plain(&s, &["list"]).await;
    run.assert_code(77);
    run.assert_stderr_has("HTTP 403 Forbidden");
    run.assert_stderr_has("TenantAdmin");

    // 401: a JWT the tenant does not accept; exit 77, and the JWT is not shown.
    let wrong_jwt = "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ3cm9uZy11c2VyIn0.d3JvbmctdG9rZW4tc2lnbmF0dXJl";
    let bad = setup(&api, wrong_jwt, None);
    for args in [
        vec!["list"],
        vec!["resend-failed", "--since", "1h", "--all"],
        vec!["create", "--name", "r", "--url", RELAY_URL],
    ] {
        let run = webhook(&bad, &args, Some(SECRET), None).await;
        assert_eq!(run.code, 77, "{args:?}: {}", run.all());
        run.assert_stderr_has("HTTP 401 Unauthorized");
        run.assert_stderr_has("did not accept the JWT");
        assert_no_secrets(&run, wrong_jwt);
    }

    // 503 on a GET is retried; still failing: exit 1 with the attempts.
    for _ in 0..3 {
        api.fail_next(503, json!(null));
    }
    let run = plain(&s, &["list"]).await;
    run.assert_code(1);
    run.assert_stderr_has("after 3 attempts");

    // 429 on create is retried after Retry-After, and creates one webhook.
    let before = api.webhooks().len();
    api.fail_next(200, json!(null)); // the duplicate check's list
    api.rate_limit_next("0");
    let run = create_relay(&s, &["--event-type", RELOAD]).await;
    run.assert_code(0);
    assert_eq!(api.webhooks().len(), before + 1);
}

#[tokio::test]
async fn several_tenants_need_tenant_and_use_that_tenants_jwt() {
    let first = FakeWebhooks::start().await;
    let second = FakeWebhooks::start().await;
    second.add_webhook(json!({"name": "on the second tenant", "url": RELAY_URL, "enabled": true}));
    let s = setup(&first, &first.jwt(), Some(&second));
    let run = plain(&s, &["list"]).await;
    run.assert_code(2);
    run.assert_stderr_has("--tenant");
    run.assert_stderr_has(OTHER_TENANT);

    let run = plain(&s, &["list", "--tenant", OTHER_TENANT]).await;
    run.assert_code(0);
    run.assert_stdout_has("on the second tenant");
    assert!(first.requests().is_empty());

    let run = plain(&s, &["list", "--tenant", "nope"]).await;
    run.assert_code(2);
}

#[tokio::test]
async fn help_documents_the_commands_and_exit_codes() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
        .args(["webhook", "--help"])
        .output()
        .await
        .expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0));
    for word in [
        "create",
        "list",
        "delete",
        "resend-failed",
        "65",
        "66",
        "75",
        "77",
        "78",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
        .args(["webhook", "create", "--help"])
        .output()
        .await
        .expect("runs");
    let help = String::from_utf8_lossy(&output.stdout);
    for word in [
        "--secret-env",
        "WEBHOOK_SECRET",
        "--event-type",
        "--disabled",
        "--filter",
        "--force",
        "session create",
    ] {
        assert!(help.contains(word), "{word}: {help}");
    }
}
