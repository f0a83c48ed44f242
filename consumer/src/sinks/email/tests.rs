//! Recipients, tag gating and the message itself, without an SMTP server.

use super::*;
use crate::settings::SecretSource;
use serde_json::json;

fn smtp() -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port: 2525,
        secure: false,
        server_name: None,
        ignore_tls: true,
        require_tls: false,
        reject_unauthorized: true,
        ca_file: None,
        auth: Some(crate::settings::SmtpAuth {
            user: "butler".into(),
            password: "smtp-unit-secret".into(),
            password_source: SecretSource::File("x".into()),
        }),
        timeout: Duration::from_secs(5),
    }
}

fn sink(owner: AppOwnerAlert, tag: Option<&str>) -> EmailSink {
    EmailSink::new(EmailConfig {
        alert: EmailAlert {
            tenant_id: "t1".into(),
            key: "k".into(),
            recipients: vec!["ops@example.com".into(), "Anna@example.com".into()],
            alert_enable_by_tag: AlertEnableByTag {
                enable: tag.is_some(),
                tag: tag.unwrap_or_default().into(),
            },
            app_owner_alert: owner,
            priority: EmailPriority::High,
            subject: "Reload failed: {{appName}}".into(),
            html_template_path: None,
            text_template_path: None,
            digest_template_path: None,
            from_address: "Qlik Sense (no-reply) <noreply@example.com>".into(),
            head_script_log_lines: 2,
            tail_script_log_lines: 1,
            rate_limit: Duration::ZERO,
        },
        from: parse_mailbox("Qlik Sense (no-reply) <noreply@example.com>").unwrap(),
        html_template: DEFAULT_HTML_TEMPLATE.into(),
        text_template: DEFAULT_TEXT_TEMPLATE.into(),
        digest_template: DEFAULT_DIGEST_HTML_TEMPLATE.into(),
        smtp: smtp(),
    })
    .unwrap()
}

fn alert(owner_email: &str, tags: &[&str]) -> Alert {
    Alert {
        app_id: Some("app1".into()),
        reload_id: Some("r1".into()),
        app_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        script_log: Some("l1\nl2\nl3\nl4".into()),
        ..Alert::sample("ev/1", "t1")
    }
    .with_context(json!({
        "appName": "Sales\r\nBcc: evil@example.com <b>",
        "appOwnerEmail": owner_email,
    }))
}

fn owner(include_all: bool, include: &[&str], exclude: &[&str]) -> AppOwnerAlert {
    AppOwnerAlert {
        enable: true,
        include_all,
        include: include.iter().map(|s| (*s).to_owned()).collect(),
        exclude: exclude.iter().map(|s| (*s).to_owned()).collect(),
    }
}

#[test]
fn recipients_and_tag_gating() {
    let off = AppOwnerAlert::default();
    // Global list only; the owner's address equal to a listed one (other case) once.
    assert_eq!(
        sink(owner(true, &[], &[]), None).recipients(&alert("anna@EXAMPLE.com", &[])),
        Some(vec!["ops@example.com".into(), "Anna@example.com".into()])
    );
    assert_eq!(
        sink(off.clone(), None).recipients(&alert("bo@example.com", &[])),
        Some(vec!["ops@example.com".into(), "Anna@example.com".into()])
    );
    // Owner included by list, excluded by list (exclude wins), not listed.
    let listed = owner(false, &["BO@example.com"], &[]);
    assert_eq!(
        sink(listed, None).recipients(&alert("bo@example.com", &[])),
        Some(vec![
            "ops@example.com".into(),
            "Anna@example.com".into(),
            "bo@example.com".into()
        ])
    );
    let excluded = owner(true, &["bo@example.com"], &["bo@example.com"]);
    assert_eq!(
        sink(excluded, None)
            .recipients(&alert("bo@example.com", &[]))
            .map(|l| l.len()),
        Some(2)
    );
    let not_listed = owner(false, &["someone@example.com"], &[]);
    assert_eq!(
        sink(not_listed, None)
            .recipients(&alert("bo@example.com", &[]))
            .map(|l| l.len()),
        Some(2)
    );
    // Tag gating: an untagged app mails nobody, owner included; a tagged one mails everyone.
    let gated = sink(owner(true, &[], &[]), Some("Email me"));
    assert!(!gated.accepts(&alert("bo@example.com", &["Other"])));
    assert!(!gated.accepts(&alert("bo@example.com", &[])));
    let tagged = alert("bo@example.com", &["Email me"]);
    assert!(gated.accepts(&tagged));
    assert_eq!(gated.recipients(&tagged).map(|l| l.len()), Some(3));
    assert!(sink(off, None).accepts(&alert("", &[])));
    // An owner address the tenant got wrong is skipped, not sent to.
    assert_eq!(
        sink(owner(true, &[], &[]), None).recipients(&alert("not an address\r\n", &[])),
        Some(vec!["ops@example.com".into(), "Anna@example.com".into()])
    );
}

#[test]
fn message_has_one_line_subject_priority_and_both_parts() {
    let s = sink(AppOwnerAlert::default(), None);
    let message = s
        .message(&alert("", &[]), "ops@example.com")
        .expect("message");
    let raw = String::from_utf8(message.formatted()).expect("utf-8");
    let headers = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        headers.contains("Subject: Reload failed: Sales Bcc: evil@example.com <b>\r\n"),
        "{headers}"
    );
    assert!(!headers.contains("\r\nBcc:"), "{headers}");
    assert!(headers.contains("X-Priority: 1 (Highest)\r\n"), "{headers}");
    assert!(headers.contains("Importance: High\r\n"), "{headers}");
    assert!(headers.contains("To: ops@example.com\r\n"), "{headers}");
    assert!(
        headers.contains("Message-ID: <ev_1."),
        "stable message id: {headers}"
    );
    assert!(raw.contains("multipart/alternative"), "{raw}");
    assert!(raw.contains("text/plain"), "{raw}");
    assert!(raw.contains("text/html"), "{raw}");
    // The same alert to the same recipient gets the same Message-ID; another, another.
    let again = String::from_utf8(
        s.message(&alert("", &[]), "ops@example.com")
            .unwrap()
            .formatted(),
    )
    .unwrap();
    let id = |raw: &str| {
        raw.lines()
            .find(|l| l.starts_with("Message-ID:"))
            .map(str::to_owned)
    };
    assert_eq!(id(&raw), id(&again));
    let other = String::from_utf8(
        s.message(&alert("", &[]), "anna@example.com")
            .unwrap()
            .formatted(),
    )
    .unwrap();
    assert_ne!(id(&raw), id(&other));
}

#[test]
fn priority_headers_match_nodemailer() {
    assert_eq!(
        priority_headers(EmailPriority::High),
        ("1 (Highest)", "High")
    );
    assert_eq!(
        priority_headers(EmailPriority::Normal),
        ("3 (Normal)", "Normal")
    );
    assert_eq!(priority_headers(EmailPriority::Low), ("5 (Lowest)", "Low"));
}

#[test]
fn from_address_forms_butler_uses() {
    let m = parse_mailbox("Qlik Sense (no-reply) <qliksense-noreply@ptarmiganlabs.com>")
        .expect("Butler's sample");
    assert_eq!(m.email.to_string(), "qliksense-noreply@ptarmiganlabs.com");
    assert_eq!(m.name.as_deref(), Some("Qlik Sense (no-reply)"));
    assert!(parse_mailbox("alerts@example.com").is_ok());
    assert!(parse_mailbox("\"Ops, EU\" <ops@example.com>").is_ok());
    assert!(parse_mailbox("Ops <ops@example.com>\r\nBcc: x@example.com").is_err());
    assert!(parse_mailbox("no address here").is_err());
}

#[test]
fn debug_output_has_no_password() {
    let s = sink(AppOwnerAlert::default(), None);
    let text = format!("{:?} {:?}", s.config(), s.transport);
    assert!(!text.contains("smtp-unit-secret"), "{text}");
}

fn digest_entries(n: usize) -> Vec<crate::digest::DigestEntry> {
    (0..n)
        .map(|i| crate::digest::DigestEntry {
            event_id: format!("e{i}"),
            tenant_id: "t1".into(),
            tenant_comment: None,
            app_id: Some(format!("a{i}")),
            app_name: format!("App {i}"),
            app_url: Some(format!("https://t1.example/sense/app/a{i}?x=1&y=2")),
            reload_id: None,
            time: Some("2026-03-02T07:06:22Z".into()),
            error_line: "Field not found".into(),
        })
        .collect()
}

fn digest_parts(s: &EmailSink, n: usize) -> Vec<Digest> {
    crate::digest::split("w", "2026-03-02T07:05:00Z", "2026-03-02T07:06:00Z", digest_entries(n), |d| {
        s.digest_fits(d)
    })
}

#[test]
fn a_digest_goes_to_the_recipient_of_its_part_with_its_own_subject() {
    // Owner alerts on and a tag gate: neither applies to a digest part.
    let s = sink(owner(true, &[], &[]), Some("Email me"))
        .with_digest(Some(crate::settings::DigestConfig::default().settings()));
    assert!(s.digest().is_some());
    let parts = digest_parts(&s, 2);
    let alert = Alert::for_digest("t1", Some("anna@example.com"), parts[0].clone());
    assert!(s.accepts(&alert));
    assert_eq!(s.recipients(&alert), Some(vec!["anna@example.com".into()]));
    let raw = String::from_utf8(s.message(&alert, "anna@example.com").unwrap().formatted()).unwrap();
    let headers = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(headers.contains("Subject: Qlik Cloud: 2 app reloads failed\r\n"), "{headers}");
    assert!(headers.contains("To: anna@example.com\r\n"), "{headers}");
    assert!(headers.contains("Message-ID: <digest-w-1of1."), "{headers}");
    // Without a recipient the part cannot be sent: parked, not mailed to someone else.
    let nobody = Alert::for_digest("t1", None, parts[0].clone());
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    assert!(matches!(
        runtime.block_on(s.send(&nobody)),
        Err(SinkError::Permanent(_))
    ));
}

#[test]
fn digest_emails_list_at_most_500_apps_and_number_their_parts() {
    let s = sink(AppOwnerAlert::default(), None);
    let parts = digest_parts(&s, 1200);
    let sizes: Vec<usize> = parts.iter().map(|p| p.entries.len()).collect();
    assert_eq!(sizes, [MAX_DIGEST_ENTRIES, MAX_DIGEST_ENTRIES, 200]);
    assert_eq!(digest::subject(&parts[1]), "Qlik Cloud: 1200 app reloads failed (part 2 of 3)");
    let (_, html, text) = digest::render(&s.config().digest_template, &parts[2], "t1").unwrap();
    for i in 1000..1200 {
        assert_eq!(html.matches(&format!(">App {i}</a>")).count(), 1, "App {i}");
        assert_eq!(text.matches(&format!("\nApp {i} <")).count(), 1, "App {i}");
    }
    assert!(!html.contains(">App 999<"));
}

#[test]
fn digest_emails_escape_names_and_errors_in_html() {
    let s = sink(AppOwnerAlert::default(), None);
    let mut entries = digest_entries(1);
    entries[0].app_name = "Ops <!channel> <script>alert(1)</script>".into();
    entries[0].error_line = "*bold* [link](https://evil) <a href=\"https://evil\">x</a> & more".into();
    entries[0].tenant_comment = Some("<b>EU</b>".into());
    let digest = crate::digest::split("w", "s", "e", entries, |_| true).remove(0);
    let (subject, html, text) = digest::render(&s.config().digest_template, &digest, "t1").unwrap();
    assert_eq!(subject, "Qlik Cloud: 1 app reload failed");
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<a href=\"https://evil"), "{html}");
    assert!(!html.contains("<b>EU"), "{html}");
    assert!(
        html.contains(
            "<a href=\"https://t1.example/sense/app/a0?x&#x3D;1&amp;y&#x3D;2\">Ops &lt;!channel&gt; &lt;script&gt;alert(1)&lt;/script&gt;</a>"
        ),
        "{html}"
    );
    assert!(
        html.contains("*bold* [link](https://evil) &lt;a href&#x3D;&quot;https://evil&quot;&gt;x&lt;/a&gt; &amp; more"),
        "{html}"
    );
    // The text part shows them as typed: nothing reads markup there.
    assert!(text.contains("Ops <!channel> <script>alert(1)</script> <https://t1.example/"), "{text}");
}

#[test]
fn digest_template_file_is_found_in_body_file_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("my-digest.handlebars"), "<p>{{count}} apps: {{#each alerts}}{{appName}}{{/each}}</p>").unwrap();
    let yaml = |digest: &str| -> serde_yaml_ng::Value {
        serde_yaml_ng::from_str(&format!(
            "emailNotification:
  reloadAppFailure:
    enable: true
    subject: x
    fromAddress: a@example.com
    recipients: [b@example.com]
    bodyFileDirectory: {}
    htmlTemplateFile: my-digest
    digestTemplateFile: {digest}
",
            dir.path().display()
        ))
        .unwrap()
    };
    let found = yaml("my-digest");
    let mut p = Problems::default();
    let destination = parse(&Node::root("alert", Some(&found)), "t1", &mut p).unwrap();
    assert!(p.0.is_empty(), "{:?}", p.0.iter().map(|p| &p.message).collect::<Vec<_>>());
    let alert = (destination.as_ref() as &dyn std::any::Any)
        .downcast_ref::<EmailAlert>()
        .unwrap()
        .clone();
    assert_eq!(alert.digest_template_path, Some(dir.path().join("my-digest.handlebars")));
    assert!(alert.alert_summary().unwrap().contains("digests formatted with"));
    let s = EmailSink::new(EmailConfig::new(&alert, Some(&smtp())).unwrap()).unwrap();
    let mut entries = digest_entries(1);
    entries[0].app_name = "<i>x</i>".into();
    let digest = crate::digest::split("w", "s", "e", entries, |_| true).remove(0);
    let (_, html, _) = digest::render(&s.config().digest_template, &digest, "t1").unwrap();
    assert_eq!(html, "<p>1 apps: &lt;i&gt;x&lt;/i&gt;</p>");

    let missing = yaml("nope");
    let mut p = Problems::default();
    parse(&Node::root("alert", Some(&missing)), "t1", &mut p);
    let paths: Vec<&str> = p.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["alert.emailNotification.reloadAppFailure.digestTemplateFile"]);
}

fn notice() -> Alert {
    Alert::for_notice(
        "t1",
        "watchdog/1",
        crate::alert::Notice {
            title: "Qlik disabled the webhook <b>relay</b>\r\nBcc: evil@example.com".into(),
            text: "disabledReason: <script>alert(1)</script> & more\nRe-enabled.\n\nCheck the relay."
                .into(),
        },
    )
}

#[test]
fn a_notice_goes_to_the_configured_recipients_only() {
    // Owner alerts on, every owner included, and a tag gate: none of it concerns a notice.
    let s = sink(owner(true, &[], &[]), Some("alert"));
    let mut notice = notice();
    // Not an app's: even an owner address in the context is not looked at.
    notice
        .context
        .insert("appOwnerEmail".into(), "bo@example.com".into());
    assert!(s.accepts(&notice));
    assert!(!s.accepts(&Alert {
        tenant_id: "t2".into(),
        ..notice.clone()
    }));
    assert_eq!(
        s.recipients(&notice),
        Some(vec!["ops@example.com".into(), "Anna@example.com".into()])
    );
    // A copy already addressed (a replayed one) stays with its recipient.
    assert_eq!(
        s.recipients(&notice.for_recipient("anna@example.com")),
        Some(vec!["anna@example.com".into()])
    );
}

#[test]
fn notice_email_has_the_title_as_subject_and_escaped_html() {
    let s = sink(AppOwnerAlert::default(), None);
    let notice = notice();
    let raw = String::from_utf8(
        s.message(&notice, "ops@example.com")
            .expect("message")
            .formatted(),
    )
    .expect("utf-8");
    let headers = raw.split("\r\n\r\n").next().unwrap_or_default();
    assert!(
        headers.contains(
            "Subject: Qlik disabled the webhook <b>relay</b> Bcc: evil@example.com\r\n"
        ),
        "{headers}"
    );
    assert!(!headers.contains("\r\nBcc:"), "{headers}");
    assert!(headers.contains("To: ops@example.com\r\n"), "{headers}");
    let (subject, html, text) = notice::render(notice.notice.as_ref().unwrap());
    assert_eq!(
        subject,
        "Qlik disabled the webhook <b>relay</b> Bcc: evil@example.com"
    );
    assert!(!html.contains("<script"), "{html}");
    assert!(!html.contains("<b>relay"), "{html}");
    assert!(
        html.contains("<h2>Qlik disabled the webhook &lt;b&gt;relay&lt;/b&gt; Bcc: evil@example.com</h2>"),
        "{html}"
    );
    assert!(
        html.contains(
            "<p>disabledReason: &lt;script&gt;alert(1)&lt;/script&gt; &amp; more<br>\nRe-enabled.</p>\n<p>Check the relay.</p>"
        ),
        "{html}"
    );
    // The text part is the text as it is: nothing reads markup there.
    assert_eq!(text, notice.notice.as_ref().unwrap().text);
}
