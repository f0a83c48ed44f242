//! Email alerts against a real SMTP server on 127.0.0.1 (`support::smtp_server`): one email per
//! recipient with the rendered subject, priority headers, HTML and text parts and the script log
//! excerpt; app-owner include/exclude; rate limit per app and recipient; a rejected recipient
//! parked alone; SMTP down → parked → `consumer replay`; STARTTLS and implicit TLS with a
//! certificate made here, honouring `rejectUnauthorized` and the CA extension; and Butler's
//! `alertEnableByTag` on email, Slack and Teams with tags from the tenant's items API; and
//! digests (issue 15): a storm to one recipient, each app owner's own digest, a digest parked
//! while SMTP is down and sent by `consumer replay`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use consumer::alert::Alert;
use consumer::delivery::Outcome;
use consumer::transforms::Handled;
use serde_json::{Value, json};
use support::fake_tenant::{self, FakeTenant};
use support::smtp_server::{Mail, SmtpEvent, SmtpOptions, SmtpServer, TestPki};
use support::*;

const SMTP_USER: &str = "butler";
/// Marker for "never in any output".
const SMTP_PASSWORD: &str = "smtp-TEST-secret-8412";
const FROM: &str = "Qlik Sense (no-reply) <qliksense-noreply@example.com>";
const OWNER: &str = "anna.andersson@example.com";

/// The SMTP server block, `Butler.emailNotification.smtp`.
struct Smtp {
    host: String,
    port: u16,
    secure: bool,
    /// `tls.*`, in the order `add_email` writes them.
    ignore_tls: bool,
    require_tls: bool,
    reject_unauthorized: bool,
    server_name: Option<&'static str>,
    ca_file: Option<PathBuf>,
    auth: bool,
}

impl Smtp {
    /// Plain text with login, as against a relay on the local network.
    fn plain(port: u16) -> Self {
        Self {
            host: "127.0.0.1".to_owned(),
            port,
            secure: false,
            ignore_tls: true,
            require_tls: false,
            reject_unauthorized: true,
            server_name: None,
            ca_file: None,
            auth: true,
        }
    }
}

/// `appOwnerAlert`: `(includeOwner.includeAll, includeOwner.user, excludeOwner.user)`.
type OwnerLists = (bool, Vec<&'static str>, Vec<&'static str>);

/// `alert.emailNotification.reloadAppFailure`.
struct Email {
    recipients: Vec<&'static str>,
    /// `None`: owner alerts off.
    owner: Option<OwnerLists>,
    tag: Option<&'static str>,
    priority: &'static str,
    rate_limit: u64,
    smtp: Smtp,
}

impl Email {
    fn to(recipients: &[&'static str], smtp: Smtp) -> Self {
        Self {
            recipients: recipients.to_vec(),
            owner: None,
            tag: None,
            priority: "high",
            rate_limit: 0,
            smtp,
        }
    }

    /// No fixed recipient: every app's owner gets the alerts of their apps.
    fn owners_only(smtp: Smtp) -> Self {
        Self {
            owner: Some((true, vec![], vec![])),
            ..Self::to(&[], smtp)
        }
    }
}

/// Adds Butler's email keys: the SMTP server, and the tenant's email alert.
fn add_email(config: &mut testkit::butler::Config, email: &Email) {
    let s = &email.smtp;
    let mut tls = json!({
        "ignoreTLS": s.ignore_tls,
        "requireTLS": s.require_tls,
        "rejectUnauthorized": s.reject_unauthorized,
    });
    if let Some(name) = s.server_name {
        tls["serverName"] = json!(name);
    }
    if let Some(ca) = &s.ca_file {
        tls["caFile"] = json!(ca.display().to_string());
    }
    let smtp = json!({
        "enable": true,
        "smtp": {
            "host": &s.host,
            "port": s.port,
            "secure": s.secure,
            "tls": tls,
            "auth": {"enable": s.auth, "user": SMTP_USER, "password": SMTP_PASSWORD},
        }
    });
    let (owner_enable, include_all, include, exclude) = match &email.owner {
        Some((all, include, exclude)) => (true, *all, include.clone(), exclude.clone()),
        None => (false, true, vec![], vec![]),
    };
    let alert = json!({
        "enable": true,
        "alertEnableByTag": {"enable": email.tag.is_some(), "tag": email.tag.unwrap_or("Butler - Send email if app reload fails")},
        "appOwnerAlert": {
            "enable": owner_enable,
            "includeOwner": {
                "includeAll": include_all,
                // Butler's sample writes `- email: x`; its code also meets plain strings.
                "user": include.iter().map(|e| json!({"email": e})).collect::<Vec<_>>(),
            },
            "excludeOwner": {"user": exclude},
        },
        "rateLimit": email.rate_limit,
        "headScriptLogLines": 3,
        "tailScriptLogLines": 2,
        "priority": email.priority,
        "subject": "❌ Qlik Cloud reload failed: \"{{appName}}\"",
        "bodyFileDirectory": templates_dir().display().to_string(),
        "htmlTemplateFile": "email-failed-reload-qscloud",
        "fromAddress": FROM,
        "recipients": email.recipients,
    });
    config
        .butler("emailNotification", smtp)
        .tenant("alert.emailNotification.reloadAppFailure", alert);
}

fn setup_with(
    broker: &testkit::TestBroker,
    tenant: Option<&FakeTenant>,
    email: &Email,
    d: Destinations,
) -> Setup {
    let mut setup = write_config(
        broker,
        &Destinations {
            tenant_url: tenant.map(FakeTenant::url),
            jwt: tenant.map(FakeTenant::jwt),
            ..d
        },
    );
    setup.edit(|config| add_email(config, email));
    setup
}

/// Butler's SMTP user and password, as the server requires them.
fn login() -> Option<(String, String)> {
    Some((SMTP_USER.into(), SMTP_PASSWORD.into()))
}

/// An SMTP server on 127.0.0.1 that requires the login.
async fn smtp_with_login() -> SmtpServer {
    SmtpServer::start(SmtpOptions {
        auth: login(),
        ..Default::default()
    })
    .await
}

/// No other destination than the email, this many attempts per delivery.
fn attempts(max_attempts: u32) -> Destinations {
    Destinations {
        max_attempts,
        ..Default::default()
    }
}

fn outcomes(handled: Handled) -> Vec<(String, Outcome)> {
    match handled {
        Handled::Alerted { outcomes, .. } => outcomes,
        other => panic!("expected an alert, got {other:?}"),
    }
}

fn email_outcomes(outcomes: &[(String, Outcome)]) -> Vec<(String, Outcome)> {
    let prefix = format!("email:{TENANT}/");
    let mut out: Vec<(String, Outcome)> = outcomes
        .iter()
        .filter_map(|(name, o)| {
            name.strip_prefix(&prefix)
                .map(|recipient| (recipient.to_owned(), o.clone()))
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn delivered(o: &Outcome) -> bool {
    matches!(o, Outcome::Delivered { .. })
}

fn parked(o: &Outcome) -> bool {
    matches!(o, Outcome::Parked { .. })
}

async fn publish_failed_reload(broker: &testkit::TestBroker, setup: &Setup) {
    publish_failed_reload_of(broker, setup, None).await;
}

/// A failed reload of the fake app; `app_name` replaces the name the event carries (the
/// name alerts show).
async fn publish_failed_reload_of(
    broker: &testkit::TestBroker,
    setup: &Setup,
    app_name: Option<&str>,
) {
    // A reload of its own each time (the consumer alerts once per reload) that the fake
    // tenant still knows.
    let body = event_with_reload(
        Sample::CloudEventsAppReload,
        &testkit::unique("event"),
        TENANT,
        fake_tenant::APP_ID,
        &format!("{}.{}", fake_tenant::RELOAD_ID, testkit::unique("run")),
    );
    let mut body: Value = serde_json::from_slice(&body).expect("sample is JSON");
    if let Some(name) = app_name {
        body["data"]["name"] = json!(name);
    }
    publish(
        broker,
        &setup.topic,
        serde_json::to_vec(&body).expect("JSON"),
    )
    .await;
}

fn assert_no_password(text: &str) {
    assert!(
        !text.contains(SMTP_PASSWORD),
        "the SMTP password leaked into output"
    );
}

fn parked_text(setup: &Setup) -> String {
    setup
        .parked_files()
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn each_recipient_gets_one_email_with_subject_priority_html_text_and_log_excerpt() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    // An app name with markup and a line break that tries to add a header.
    let app_name = "Sales <b>EU</b> & \"more\"\r\nBcc: evil@example.com";
    let mut smtp = smtp_with_login().await;
    let mut email = Email::to(
        &["ops@example.com", "oncall@example.com"],
        Smtp::plain(smtp.port()),
    );
    email.owner = Some((true, vec![], vec![]));
    let setup = setup_with(&broker, Some(&tenant), &email, Destinations::default());
    let mut consumer = start(&setup).await;
    publish_failed_reload_of(&broker, &setup, Some(app_name)).await;
    let got = email_outcomes(&outcomes(consumer.handled().await));
    let names: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        names,
        [OWNER, "oncall@example.com", "ops@example.com"],
        "{got:?}"
    );
    assert!(got.iter().all(|(_, o)| delivered(o)), "{got:?}");

    let mut mails: Vec<Mail> = vec![smtp.mail().await, smtp.mail().await, smtp.mail().await];
    mails.sort_by(|a, b| a.to.cmp(&b.to));
    let to: Vec<Vec<String>> = mails.iter().map(|m| m.to.clone()).collect();
    assert_eq!(
        to,
        [
            vec![OWNER.to_owned()],
            vec!["oncall@example.com".to_owned()],
            vec!["ops@example.com".to_owned()]
        ],
        "one envelope recipient per email"
    );
    for mail in &mails {
        assert_eq!(mail.from, "qliksense-noreply@example.com");
        assert_eq!(mail.auth_user.as_deref(), Some(SMTP_USER));
        assert_eq!(mail.header("To").as_deref(), Some(mail.to[0].as_str()));
        assert!(
            mail.header("From")
                .is_some_and(|f| f.contains("Qlik Sense (no-reply)")
                    && f.contains("<qliksense-noreply@example.com>")),
            "{:?}",
            mail.header("From")
        );
    }
    let mail = &mails[2];
    let headers = mail.header_block();
    // Subject rendered from Butler's template, on one line: the app name's line break
    // did not start a Bcc header.
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("❌ Qlik Cloud reload failed: \"Sales <b>EU</b> & \"more\" Bcc: evil@example.com\""),
        "{headers}"
    );
    assert!(
        !headers
            .split("\r\n")
            .any(|l| l.to_ascii_lowercase().starts_with("bcc:")),
        "{headers}"
    );
    assert_eq!(mail.header("X-Priority").as_deref(), Some("1 (Highest)"));
    assert_eq!(mail.header("Importance").as_deref(), Some("High"));
    assert!(
        mail.header("Content-Type")
            .is_some_and(|c| c.starts_with("multipart/alternative")),
        "{headers}"
    );

    // HTML: every value escaped; the shipped template's fields filled in.
    let html = mail.part("text/html").expect("HTML part");
    assert!(
        html.contains("Sales &lt;b&gt;EU&lt;/b&gt; &amp; &quot;more&quot;"),
        "{html}"
    );
    assert!(!html.contains("<b>EU</b>"), "{html}");
    assert!(html.contains("Anna Andersson"), "{html}");
    assert!(
        html.contains("RELOADS-007") || html.contains("Amount"),
        "{html}"
    );
    assert!(
        html.contains("https://acme.eu.qlikcloud.com/console"),
        "{html}"
    );
    // Plain text: the same content unescaped.
    let text = mail.part("text/plain").expect("text part");
    assert!(text.contains("Sales <b>EU</b> & \"more\""), "{text}");

    // Script log: the first 3 and last 2 lines (headScriptLogLines / tailScriptLogLines).
    let log = fake_tenant::script_log(40);
    let lines: Vec<&str> = log.lines().collect();
    for wanted in lines[..3].iter().chain(&lines[38..]) {
        assert!(html.contains(wanted), "{wanted} missing from HTML");
        assert!(text.contains(wanted), "{wanted} missing from text");
    }
    for unwanted in &lines[3..38] {
        let unwanted = unwanted.replace('\'', "&#x27;");
        assert!(
            !html.contains(&unwanted),
            "{unwanted} should not be in HTML"
        );
    }
    assert!(text.contains("The last 2:"), "{text}");
    assert!(text.contains("40 lines"), "{text}");
    consumer.stop().await;
}

#[tokio::test]
async fn app_owner_include_and_exclude_lists() {
    // (includeAll, include, exclude) → does the owner get it?
    let cases: [(OwnerLists, bool); 5] = [
        ((true, vec![], vec![]), true),
        ((false, vec!["ANNA.andersson@example.com"], vec![]), true),
        ((false, vec!["someone@example.com"], vec![]), false),
        ((true, vec![], vec![OWNER]), false),
        // Listed and excluded: exclude wins, as in Butler.
        (
            (false, vec![OWNER], vec!["Anna.Andersson@example.com"]),
            false,
        ),
    ];
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    for (owner, owner_gets_it) in cases {
        let mut smtp = smtp_with_login().await;
        let mut email = Email::to(&["ops@example.com"], Smtp::plain(smtp.port()));
        email.owner = Some(owner.clone());
        let setup = setup_with(&broker, Some(&tenant), &email, Destinations::default());
        let mut consumer = start(&setup).await;
        publish_failed_reload(&broker, &setup).await;
        let got = email_outcomes(&outcomes(consumer.handled().await));
        let mut want = vec!["ops@example.com"];
        if owner_gets_it {
            want.insert(0, OWNER);
        }
        let names: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, want, "case {owner:?}");
        // Delivery is over when the message is handled: everything sent has arrived.
        let mut to: Vec<String> = smtp.drain().into_iter().flat_map(|m| m.to).collect();
        to.sort();
        assert_eq!(to, want, "case {owner:?}");
        consumer.stop().await;
    }
}

#[tokio::test]
async fn a_rejected_recipient_is_parked_alone_and_replayed_alone() {
    let broker = testkit::embedded();
    let mut smtp = SmtpServer::start(SmtpOptions {
        auth: login(),
        reject: vec!["gone@example.com".into()],
        ..Default::default()
    })
    .await;
    let email = Email::to(
        &["ops@example.com", "gone@example.com", "oncall@example.com"],
        Smtp::plain(smtp.port()),
    );
    let setup = setup_with(&broker, None, &email, attempts(3));
    let mut consumer = start(&setup).await;
    publish_failed_reload(&broker, &setup).await;
    let got = email_outcomes(&outcomes(consumer.handled().await));
    assert_eq!(got.len(), 3, "{got:?}");
    for (recipient, outcome) in &got {
        if recipient == "gone@example.com" {
            // 550 is final: parked after one attempt, not retried.
            match outcome {
                Outcome::Parked { error, .. } => {
                    assert!(error.contains("550"), "{error}");
                    assert!(error.contains("gone@example.com"), "{error}");
                }
                other => panic!("{other:?}"),
            }
        } else {
            assert!(delivered(outcome), "{recipient}: {outcome:?}");
        }
    }
    assert_eq!(
        smtp.event().await,
        SmtpEvent::Rejected("gone@example.com".into())
    );
    let mut to: Vec<String> = smtp.drain().into_iter().flat_map(|m| m.to).collect();
    to.sort();
    assert_eq!(to, ["oncall@example.com", "ops@example.com"]);
    consumer.stop().await;

    let files = setup.parked_files();
    assert_eq!(files.len(), 1, "{files:?}");
    let parked = read_json(&files[0]);
    assert_eq!(parked["sink"], format!("email:{TENANT}"));
    assert_eq!(parked["alert"]["recipient"], "gone@example.com");
    assert_eq!(parked["attempts"], 1);
    assert_no_password(&parked_text(&setup));

    // Still rejected: replay keeps it (exit 75) and sends nobody else anything.
    let (code, out, err) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 75, "{out}{err}");
    assert_no_password(&format!("{out}{err}"));
    assert!(smtp.drain().is_empty());
    // The mailbox exists again: replay delivers to that recipient only and removes the file.
    smtp.set_reject(&[]);
    let (code, out, err) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mail = smtp.mail().await;
    assert_eq!(mail.to, ["gone@example.com"]);
    assert!(smtp.drain().is_empty());
    assert!(setup.parked_files().is_empty());
}

#[tokio::test]
async fn smtp_down_parks_each_recipient_and_replay_delivers() {
    let broker = testkit::embedded();
    let mut smtp = smtp_with_login().await;
    smtp.stop();
    let email = Email::to(
        &["ops@example.com", "oncall@example.com"],
        Smtp::plain(smtp.port()),
    );
    let setup = setup_with(&broker, None, &email, attempts(2));
    let mut consumer = start(&setup).await;
    publish_failed_reload(&broker, &setup).await;
    let got = email_outcomes(&outcomes(consumer.handled().await));
    assert_eq!(got.len(), 2, "{got:?}");
    for (recipient, outcome) in &got {
        match outcome {
            Outcome::Parked { error, .. } => {
                assert!(
                    error.contains(&format!("SMTP 127.0.0.1:{}", smtp.port())),
                    "{error}"
                );
                assert_no_password(error);
            }
            other => panic!("{recipient}: {other:?}"),
        }
    }
    consumer.stop().await;
    assert_eq!(setup.parked_files().len(), 2);
    let text = parked_text(&setup);
    assert!(
        text.contains("\"attempts\": 2"),
        "retried before parking: {text}"
    );
    assert_no_password(&text);

    let (code, out, err) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 75, "alerts are parked: {out}{err}");
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("to ops@example.com"), "{out}");

    smtp.restart().await;
    let (code, out, err) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_no_password(&format!("{out}{err}"));
    let mut to: Vec<String> = vec![smtp.mail().await, smtp.mail().await]
        .into_iter()
        .flat_map(|m| m.to)
        .collect();
    to.sort();
    assert_eq!(to, ["oncall@example.com", "ops@example.com"]);
    assert!(setup.parked_files().is_empty());
}

#[tokio::test]
async fn rate_limit_is_per_app_and_recipient() {
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    let mut smtp = smtp_with_login().await;
    let mut email = Email::to(&["ops@example.com"], Smtp::plain(smtp.port()));
    email.owner = Some((true, vec![], vec![]));
    email.rate_limit = 3600;
    let setup = setup_with(&broker, Some(&tenant), &email, Destinations::default());
    let mut consumer = start(&setup).await;

    publish_failed_reload(&broker, &setup).await;
    let got = email_outcomes(&outcomes(consumer.handled().await));
    assert!(
        got.len() == 2 && got.iter().all(|(_, o)| delivered(o)),
        "{got:?}"
    );
    assert_eq!(smtp.drain().len(), 2);

    // The same app fails again, now owned by someone else: ops is inside its window, the new
    // owner is not.
    tenant.data(|d| d.owner_email = "bo@example.com".to_owned());
    publish_failed_reload(&broker, &setup).await;
    let got = email_outcomes(&outcomes(consumer.handled().await));
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].0, "bo@example.com");
    assert!(delivered(&got[0].1), "{got:?}");
    assert_eq!(got[1], ("ops@example.com".into(), Outcome::RateLimited));
    let mails = smtp.drain();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["bo@example.com"]);
    consumer.stop().await;

    let state = std::fs::read_to_string(setup.state_dir.join("rate-limits.json")).expect("state");
    assert!(
        state.contains(&format!("{}|ops@example.com", fake_tenant::APP_ID)),
        "{state}"
    );
}

/// Butler's `alertEnableByTag` on all three channels, with the tags the tenant's items API
/// returns: the fake app first carries only the Teams tag, then only the Slack and email tags.
#[tokio::test]
async fn alert_by_tag_gates_email_slack_and_teams() {
    const SLACK_TAG: &str = "Butler - Send Slack alert if app reload fails";
    const TEAMS_TAG: &str = "Butler - Send Teams alert if app reload fails";
    const EMAIL_TAG: &str = "Butler - Send email if app reload fails";
    let broker = testkit::embedded();
    let tenant = FakeTenant::start().await;
    tenant.data(|d| d.tags = vec!["Finance".into(), TEAMS_TAG.into()]);
    let mut slack = Receiver::start().await;
    let mut teams = Receiver::start().await;
    let mut smtp = smtp_with_login().await;
    let mut email = Email::to(&["ops@example.com"], Smtp::plain(smtp.port()));
    email.tag = Some(EMAIL_TAG);
    // With owner alerts on, an untagged app must not mail its owner either.
    email.owner = Some((true, vec![], vec![]));
    let setup = setup_with(
        &broker,
        Some(&tenant),
        &email,
        Destinations {
            slack: Some(slack.url("services/slack-token")),
            teams: Some(teams.url("webhookb2/teams-token")),
            slack_tag: Some(SLACK_TAG.into()),
            teams_tag: Some(TEAMS_TAG.into()),
            ..attempts(1)
        },
    );
    let mut consumer = start(&setup).await;
    let sinks = |outcomes: &[(String, Outcome)]| {
        let mut kinds: Vec<String> = outcomes
            .iter()
            .filter(|(_, o)| delivered(o))
            .filter_map(|(name, _)| name.split(':').next().map(str::to_owned))
            .filter(|kind| ["email", "slack", "teams"].contains(&kind.as_str()))
            .collect();
        kinds.sort();
        kinds
    };

    publish_failed_reload(&broker, &setup).await;
    let first = outcomes(consumer.handled().await);
    assert_eq!(sinks(&first), ["teams"], "{first:?}");
    teams.delivered().await;
    assert!(slack.drain_delivered().is_empty());
    assert!(smtp.drain().is_empty());

    tenant.data(|d| d.tags = vec![SLACK_TAG.into(), EMAIL_TAG.into()]);
    publish_failed_reload(&broker, &setup).await;
    let second = outcomes(consumer.handled().await);
    assert_eq!(sinks(&second), ["email", "email", "slack"], "{second:?}");
    slack.delivered().await;
    let mut to = vec![smtp.mail().await.to, smtp.mail().await.to];
    to.sort();
    assert_eq!(
        to,
        [vec![OWNER.to_owned()], vec!["ops@example.com".to_owned()]]
    );
    assert!(teams.drain_delivered().is_empty());
    consumer.stop().await;
}

// ---------------------------------------------------------------- TLS, straight to delivery

/// A failed-reload alert as the pipeline builds it, for tests that need no broker.
fn sample_alert() -> Alert {
    let context = json!({
        "appName": "Sales dashboard",
        "appId": fake_tenant::APP_ID,
        "appUrl": format!("https://acme.eu.qlikcloud.com/sense/app/{}", fake_tenant::APP_ID),
        "errorMessage": "Field 'Amount' not found",
        "appOwnerEmail": OWNER,
    });
    Alert {
        event_time: Some("2026-11-30T07:06:22Z".into()),
        script_log: Some(fake_tenant::script_log(10).into()),
        ..reload_alert(
            &testkit::unique("event"),
            fake_tenant::APP_ID,
            fake_tenant::RELOAD_ID,
            context,
        )
    }
}

/// Loads the test's configuration, builds the sinks and delivers one alert through the delivery
/// layer (retry, park), as the pipeline does after enrichment.
async fn deliver_once(email: &Email) -> (Vec<(String, Outcome)>, Setup) {
    let broker = testkit::embedded();
    let setup = setup_with(&broker, None, email, attempts(1));
    let config = setup.config();
    let delivery = consumer::pipeline::delivery_for(&config).expect("sinks build");
    let outcomes = delivery
        .deliver(&sample_alert(), "test")
        .await
        .expect("handled");
    (email_outcomes(&outcomes), setup)
}

fn starttls(port: u16, reject_unauthorized: bool, ca_file: Option<PathBuf>) -> Smtp {
    Smtp {
        host: "127.0.0.1".to_owned(),
        port,
        secure: false,
        server_name: Some("localhost"),
        ignore_tls: false,
        require_tls: true,
        reject_unauthorized,
        ca_file,
        auth: true,
    }
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate_honours_reject_unauthorized() {
    let pki = Arc::new(TestPki::generate());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).expect("CA file");
    let mut smtp = SmtpServer::start(SmtpOptions {
        starttls: Some(Arc::clone(&pki)),
        auth: login(),
        ..Default::default()
    })
    .await;

    // rejectUnauthorized: true and a certificate no system root vouches for: refused.
    let (got, setup) = deliver_once(&Email::to(
        &["ops@example.com"],
        starttls(smtp.port(), true, None),
    ))
    .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(parked(&got[0].1), "{got:?}");
    assert_eq!(smtp.event().await, SmtpEvent::TlsFailed);
    assert!(
        smtp.drain().is_empty(),
        "nothing sent over a refused connection"
    );
    assert_no_password(&parked_text(&setup));

    // rejectUnauthorized: false: accepted (encrypted, not authenticated).
    let (got, _setup) = deliver_once(&Email::to(
        &["ops@example.com"],
        starttls(smtp.port(), false, None),
    ))
    .await;
    assert!(delivered(&got[0].1), "{got:?}");
    let mail = smtp.mail().await;
    assert!(mail.tls, "sent after STARTTLS");
    assert_eq!(mail.auth_user.as_deref(), Some(SMTP_USER));

    // The CA extension: verified, with tls.serverName naming the certificate.
    let (got, _setup) = deliver_once(&Email::to(
        &["ops@example.com"],
        starttls(smtp.port(), true, Some(ca_file.clone())),
    ))
    .await;
    assert!(delivered(&got[0].1), "{got:?}");
    assert!(smtp.mail().await.tls);
}

#[tokio::test]
async fn implicit_tls_and_required_starttls() {
    let pki = Arc::new(TestPki::generate());
    let dir = tempfile::tempdir().expect("temp dir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).expect("CA file");

    // secure: true → TLS from the first byte.
    let mut smtps = SmtpServer::start(SmtpOptions {
        implicit_tls: Some(Arc::clone(&pki)),
        auth: login(),
        ..Default::default()
    })
    .await;
    let mut secure = starttls(smtps.port(), true, Some(ca_file.clone()));
    secure.secure = true;
    let (got, _setup) = deliver_once(&Email::to(&["ops@example.com"], secure)).await;
    assert!(delivered(&got[0].1), "{got:?}");
    assert!(smtps.mail().await.tls);

    // requireTLS against a server without STARTTLS: refused before anything is sent (the
    // password included), parked at once.
    let mut plain = smtp_with_login().await;
    let (got, _setup) = deliver_once(&Email::to(
        &["ops@example.com"],
        starttls(plain.port(), true, Some(ca_file)),
    ))
    .await;
    match &got[0].1 {
        Outcome::Parked { error, .. } => assert!(error.contains("STARTTLS"), "{error}"),
        other => panic!("{other:?}"),
    }
    assert!(plain.drain().is_empty());

    // Opportunistic (neither flag): STARTTLS when offered, plain text otherwise.
    let mut opportunistic = starttls(plain.port(), true, None);
    opportunistic.require_tls = false;
    let (got, _setup) = deliver_once(&Email::to(&["ops@example.com"], opportunistic)).await;
    assert!(delivered(&got[0].1), "{got:?}");
    assert!(!plain.mail().await.tls);
}

/// A host name that the rule treats as beyond this machine (it is neither `localhost` nor a
/// loopback address literal) but that resolves to loopback here, as the machine's own name does
/// in `/etc/hosts`: the test server stays on 127.0.0.1 and no packet leaves loopback.
fn remote_looking_loopback_name() -> Option<String> {
    use std::net::ToSocketAddrs;
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim().to_owned();
    if name.is_empty() || consumer::config::is_loopback_host(&name) {
        return None;
    }
    let resolved: Vec<_> = (name.as_str(), 25).to_socket_addrs().ok()?.collect();
    resolved
        .iter()
        .any(|a| a.ip() == std::net::Ipv4Addr::LOCALHOST)
        .then_some(name)
}

/// A network attacker strips STARTTLS (here: a server that never offers it). With a login
/// configured for a host beyond this machine, the consumer must not send the password in plain
/// text: it requires STARTTLS, refuses, and parks the alert.
#[tokio::test]
async fn a_login_never_crosses_the_network_in_plain_text() {
    let Some(name) = remote_looking_loopback_name() else {
        eprintln!(
            "SKIPPED: this machine's name does not resolve to 127.0.0.1; the config test covers the rule"
        );
        return;
    };
    let mut server = smtp_with_login().await;
    let mut smtp = starttls(server.port(), true, None);
    smtp.host = name;
    smtp.server_name = None;
    smtp.require_tls = false;
    let (got, setup) = deliver_once(&Email::to(&["ops@example.com"], smtp)).await;
    match &got[0].1 {
        Outcome::Parked { error, .. } => assert!(error.contains("STARTTLS"), "{error}"),
        other => panic!("expected parked, got {other:?}"),
    }
    assert!(server.drain().is_empty(), "nothing sent without TLS");
    assert_no_password(&parked_text(&setup));

    // The same server on this machine: nobody in between, STARTTLS stays opportunistic.
    let mut local = smtp_with_login().await;
    let mut smtp = starttls(local.port(), true, None);
    smtp.require_tls = false;
    let (got, _setup) = deliver_once(&Email::to(&["ops@example.com"], smtp)).await;
    assert!(delivered(&got[0].1), "{got:?}");
    assert_eq!(local.mail().await.auth_user.as_deref(), Some(SMTP_USER));
}

// ---------------------------------------------------------------- digests (issue 15)

/// The bound for a storm of 200 with `windowSeconds: 10`.
const STORM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);
/// The beginning of every digest email's subject ("Qlik Cloud: 12 app reloads failed").
const DIGEST_SUBJECT: &str = "Qlik Cloud: ";
/// The beginning of a single alert's subject (Butler's `subject` in [`add_email`]).
const SINGLE_SUBJECT: &str = "❌ Qlik Cloud reload failed: ";

/// App ids of one width, none a part of another, starting with `prefix`.
fn app_ids(prefix: &str, n: usize) -> Vec<String> {
    let run = testkit::unique("d").replace(['-', '_'], "");
    (0..n).map(|i| format!("{prefix}{i:04}x{run}")).collect()
}

/// A failed reload of `app` (a reload the fake tenant knows, run once) named after the app, so
/// every kind of email names it. `owner`: the event's `ownerid`, `None` to leave it out (older
/// events: the consumer asks the app for its owner).
fn failed_reload_of_app(app: &str, owner: Option<&str>) -> Vec<u8> {
    let body = event_with_reload(
        Sample::CloudEventsAppReload,
        &testkit::unique(&format!("ev-{app}")),
        TENANT,
        app,
        &format!("{}.{}", fake_tenant::RELOAD_ID, testkit::unique("run")),
    );
    let mut body: Value = serde_json::from_slice(&body).expect("sample is JSON");
    body["data"]["name"] = json!(format!("Report {app}"));
    match owner {
        Some(owner) => body["ownerid"] = json!(owner),
        None => {
            if let Some(map) = body.as_object_mut() {
                map.remove("ownerid");
            }
        }
    }
    serde_json::to_vec(&body).expect("JSON")
}

/// What a reader of the email sees: subject, text and HTML parts, decoded.
fn readable(mail: &Mail) -> String {
    format!(
        "{}\n{}\n{}",
        mail.header("Subject").unwrap_or_default(),
        mail.part("text/plain").unwrap_or_default(),
        mail.part("text/html").unwrap_or_default()
    )
}

fn is_digest_mail(mail: &Mail) -> bool {
    mail.header("Subject")
        .is_some_and(|s| s.starts_with(DIGEST_SUBJECT))
}

/// The apps of `apps` each mail names, in mail order.
fn apps_named(mails: &[Mail], apps: &[String]) -> Vec<Vec<String>> {
    mails
        .iter()
        .map(|m| {
            let text = readable(m);
            apps.iter()
                .filter(|a| text.contains(a.as_str()))
                .cloned()
                .collect()
        })
        .collect()
}

/// Collects mails until every app of `apps` is named in one, at most `deadline`.
async fn mails_naming_all(
    smtp: &mut SmtpServer,
    apps: &[String],
    deadline: std::time::Duration,
) -> Vec<Mail> {
    let end = std::time::Instant::now() + deadline;
    let mut mails: Vec<Mail> = Vec::new();
    loop {
        mails.extend(smtp.drain());
        let named: std::collections::HashSet<String> =
            apps_named(&mails, apps).into_iter().flatten().collect();
        if named.len() == apps.len() {
            return mails;
        }
        assert!(
            std::time::Instant::now() < end,
            "within {deadline:?} only {} of {} apps were named, in {} mails",
            named.len(),
            apps.len(),
            mails.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn storm_to_one_recipient(broker: &testkit::TestBroker) {
    const N: usize = 200;
    let mut smtp = smtp_with_login().await;
    let email = Email::to(&["ops@example.com"], Smtp::plain(smtp.port()));
    let setup = setup_with(
        broker,
        None,
        &email,
        Destinations {
            digest: Some((3, 10)),
            ..attempts(3)
        },
    );
    let consumer = start(&setup).await;
    let apps = app_ids("app", N);
    let started = std::time::Instant::now();
    burst(
        broker,
        &setup.topic,
        apps.iter().map(|a| failed_reload_of_app(a, None)).collect(),
    )
    .await;
    let mails = mails_naming_all(&mut smtp, &apps, STORM_DEADLINE).await;
    let took = started.elapsed();
    until_nothing_parked(&setup).await;
    consumer.stop().await;
    let mut mails = mails;
    // Anything sent before the consumer stopped has arrived by now.
    mails.extend(smtp.drain());

    assert!(
        mails.len() <= 20,
        "{} mails for {N} failed reloads",
        mails.len()
    );
    assert!(
        mails.iter().all(|m| m.to == ["ops@example.com"]),
        "every mail to ops@example.com alone"
    );
    let named = apps_named(&mails, &apps);
    for app in &apps {
        let n = named.iter().filter(|in_mail| in_mail.contains(app)).count();
        assert_eq!(n, 1, "{app} is named in {n} mails");
    }
    let (digests, singles): (Vec<(&Mail, &Vec<String>)>, Vec<_>) = mails
        .iter()
        .zip(&named)
        .partition(|(m, _)| is_digest_mail(m));
    assert_eq!(
        singles.len(),
        3,
        "the first afterAlerts (3) go out one by one"
    );
    for (mail, apps_in) in &singles {
        let subject = mail.header("Subject").unwrap_or_default();
        assert!(subject.starts_with(SINGLE_SUBJECT), "{subject}");
        assert_eq!(apps_in.len(), 1, "a single alert names one app: {subject}");
    }
    assert!(!digests.is_empty(), "no digest among {} mails", mails.len());
    let want = format!("{DIGEST_SUBJECT}{} app reloads failed", N - 3);
    for (part, (mail, apps_in)) in digests.iter().enumerate() {
        let subject = mail.header("Subject").unwrap_or_default();
        if digests.len() == 1 {
            assert_eq!(subject, want);
        } else {
            assert!(
                subject.starts_with(&want) && subject.contains(&format!(" of {})", digests.len())),
                "part {part}: {subject}"
            );
        }
        assert!(
            apps_in.len() <= consumer::sinks::email::MAX_DIGEST_ENTRIES,
            "{subject}: {} apps",
            apps_in.len()
        );
    }
    assert_eq!(
        digests.iter().map(|(_, a)| a.len()).sum::<usize>(),
        N - 3,
        "the digest lists every folded app"
    );
    assert!(
        setup.parked_files().is_empty(),
        "nothing parked: {:?}",
        setup.parked_files()
    );
    eprintln!(
        "{}: storm of {N} to one email recipient → {} mails (3 single, {} digest), all named after {took:?}",
        broker.name,
        mails.len(),
        digests.len()
    );
}

/// A storm of 200 failed reloads to one recipient: 3 single emails, then one digest email
/// for the rest of the window, every app named once, within 60 s, nothing parked.
#[tokio::test]
async fn a_storm_reaches_an_email_recipient_as_a_digest() {
    for broker in testkit::brokers() {
        storm_to_one_recipient(&broker).await;
    }
}

/// Each app owner is a destination of their own: two owners whose apps fail together each get
/// their first `afterAlerts` alerts one by one and a digest of the rest, naming only their
/// own apps.
#[tokio::test]
async fn each_app_owner_gets_a_digest_of_their_own_apps() {
    use support::fake_tenant::AppOwner;
    const ANNA: &str = "anna.berg@example.com";
    const BOB: &str = "bob.svensson@example.com";
    const ANNA_ID: &str = "64a1b2c3d4e5f60718293a4b";
    const BOB_ID: &str = "64b1c2d3e4f5061728394a5b";
    let broker = testkit::brokers().remove(0);
    let anna_apps = app_ids("annaapp", 5);
    let bob_apps = app_ids("bob0app", 5);
    let tenant = FakeTenant::start().await;
    tenant.data(|d| {
        d.app_owners = vec![
            AppOwner::new("annaapp", ANNA_ID, "Anna Berg", ANNA),
            AppOwner::new("bob0app", BOB_ID, "Bob Svensson", BOB),
        ];
    });
    let mut smtp = smtp_with_login().await;
    let email = Email::owners_only(Smtp::plain(smtp.port()));
    let setup = setup_with(
        &broker,
        Some(&tenant),
        &email,
        Destinations {
            digest: Some((2, 5)),
            ..attempts(3)
        },
    );
    let mut consumer = start(&setup).await;
    // Anna's events name their owner; Bob's do not (older events): the app's owner is asked.
    let mut events: Vec<Vec<u8>> = Vec::new();
    for (anna, bob) in anna_apps.iter().zip(&bob_apps) {
        events.push(failed_reload_of_app(anna, Some(ANNA_ID)));
        events.push(failed_reload_of_app(bob, None));
    }
    burst(&broker, &setup.topic, events).await;
    let mut outcomes_seen = Vec::new();
    for _ in 0..10 {
        outcomes_seen.extend(email_outcomes(&outcomes(consumer.handled().await)));
    }
    let all_apps: Vec<String> = anna_apps.iter().chain(&bob_apps).cloned().collect();
    let mails = mails_naming_all(&mut smtp, &all_apps, std::time::Duration::from_secs(30)).await;
    until_nothing_parked(&setup).await;
    consumer.stop().await;
    let mut mails = mails;
    mails.extend(smtp.drain());

    for (owner, own, others) in [(ANNA, &anna_apps, &bob_apps), (BOB, &bob_apps, &anna_apps)] {
        let theirs: Vec<Mail> = mails.iter().filter(|m| m.to == [owner]).cloned().collect();
        let seen: Vec<&Outcome> = outcomes_seen
            .iter()
            .filter(|(r, _)| r == owner)
            .map(|(_, o)| o)
            .collect();
        assert_eq!(
            seen.iter().filter(|o| delivered(o)).count(),
            2,
            "{owner}: {seen:?}"
        );
        assert_eq!(
            seen.iter()
                .filter(|o| matches!(o, Outcome::Digested { .. }))
                .count(),
            3,
            "{owner}: {seen:?}"
        );
        let named_own = apps_named(&theirs, own);
        let named_others = apps_named(&theirs, others);
        assert!(
            named_others.iter().all(Vec::is_empty),
            "{owner} got mail naming another owner's apps: {named_others:?}"
        );
        let mut listed: Vec<String> = named_own.iter().flatten().cloned().collect();
        listed.sort();
        assert_eq!(
            &listed, own,
            "{owner}: each of their apps in exactly one mail"
        );
        let mut shape: Vec<(bool, usize)> = theirs
            .iter()
            .zip(&named_own)
            .map(|(m, a)| (is_digest_mail(m), a.len()))
            .collect();
        shape.sort();
        assert_eq!(
            shape,
            [(false, 1), (false, 1), (true, 3)],
            "{owner}: 2 single emails and a digest of 3"
        );
        let digest = theirs.iter().find(|m| is_digest_mail(m)).expect("digest");
        assert_eq!(
            digest.header("Subject").as_deref(),
            Some("Qlik Cloud: 3 app reloads failed")
        );
    }
    assert_eq!(
        mails.len(),
        6,
        "mails only to the two owners: {:?}",
        mails.iter().map(|m| &m.to).collect::<Vec<_>>()
    );
    assert!(setup.parked_files().is_empty());
}

/// A digest whose SMTP server is down when its window closes is parked like an alert (no
/// redelivery schedule, one attempt), and `consumer replay` sends it once the server is back.
#[tokio::test]
async fn a_digest_is_parked_while_smtp_is_down_and_replayed() {
    let broker = testkit::brokers().remove(0);
    let mut smtp = smtp_with_login().await;
    let email = Email::to(&["ops@example.com"], Smtp::plain(smtp.port()));
    let setup = setup_with(
        &broker,
        None,
        &email,
        Destinations {
            digest: Some((2, 5)),
            max_attempts: 1,
            redelivery_schedule: Some(vec![]),
            ..Default::default()
        },
    );
    let mut consumer = start(&setup).await;
    let apps = app_ids("app", 5);
    burst(
        &broker,
        &setup.topic,
        apps.iter().map(|a| failed_reload_of_app(a, None)).collect(),
    )
    .await;
    let mut seen = Vec::new();
    for _ in 0..apps.len() {
        seen.extend(email_outcomes(&outcomes(consumer.handled().await)));
    }
    assert_eq!(
        seen.iter().filter(|(_, o)| delivered(o)).count(),
        2,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|(_, o)| matches!(o, Outcome::Digested { .. }))
            .count(),
        3,
        "{seen:?}"
    );
    // The singles were delivered before their events were handled; the server now goes down
    // before the window (5 s from the first alert) closes.
    let singles = [smtp.mail().await, smtp.mail().await];
    smtp.stop();
    let sent: Vec<String> = apps_named(&singles, &apps).into_iter().flatten().collect();
    assert_eq!(sent.len(), 2, "{sent:?}");
    let folded: Vec<String> = apps.iter().filter(|a| !sent.contains(a)).cloned().collect();

    // The digest is held on disk while it is tried, then parked with the SMTP error.
    let refused = format!("SMTP 127.0.0.1:{}", smtp.port());
    let end = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let parked = loop {
        let files = setup.parked_files();
        let failed: Vec<Value> = files
            .iter()
            .map(|p| read_json(p))
            .filter(|j| j["error"].as_str().is_some_and(|e| e.contains(&refused)))
            .collect();
        if !failed.is_empty() {
            assert_eq!(files.len(), 1, "one file for the digest: {files:?}");
            break failed[0].clone();
        }
        assert!(
            std::time::Instant::now() < end,
            "no digest parked with the SMTP error; files: {files:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    consumer.stop().await;
    let digest = &parked["alert"]["digest"];
    assert_eq!(digest["total"], 3, "{parked}");
    assert_eq!(parked["alert"]["recipient"], "ops@example.com", "{parked}");
    assert_eq!(
        parked["exhausted"], true,
        "no schedule: left for replay: {parked}"
    );
    let mut listed: Vec<String> = digest["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["appId"].as_str().map(str::to_owned))
        .collect();
    listed.sort();
    assert_eq!(listed, folded);
    assert_no_password(&parked.to_string());

    let (code, out, err) = run_command(&setup, &["replay", "--list"]).await;
    assert_eq!(code, 75, "alerts are parked: {out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");

    smtp.restart().await;
    let (code, out, err) = run_command(&setup, &["replay"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let mail = smtp.mail().await;
    assert_eq!(mail.to, ["ops@example.com"]);
    assert_eq!(
        mail.header("Subject").as_deref(),
        Some("Qlik Cloud: 3 app reloads failed")
    );
    let named: Vec<String> = apps_named(std::slice::from_ref(&mail), &apps)
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(
        named, folded,
        "the digest names the folded apps, not the singles"
    );
    assert!(smtp.drain().is_empty(), "one email for the digest");
    assert!(
        setup.parked_files().is_empty(),
        "{:?}",
        setup.parked_files()
    );
}
