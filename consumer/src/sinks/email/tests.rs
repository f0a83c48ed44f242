//! Recipients, tag gating and the message itself, without an SMTP server.

use super::*;
use crate::config::SecretSource;
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
        auth: Some(crate::config::SmtpAuth {
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
            from_address: "Qlik Sense (no-reply) <noreply@example.com>".into(),
            head_script_log_lines: 2,
            tail_script_log_lines: 1,
            rate_limit: Duration::ZERO,
        },
        from: parse_mailbox("Qlik Sense (no-reply) <noreply@example.com>").unwrap(),
        html_template: DEFAULT_HTML_TEMPLATE.into(),
        text_template: DEFAULT_TEXT_TEMPLATE.into(),
        smtp: smtp(),
    })
    .unwrap()
}

fn alert(owner_email: &str, tags: &[&str]) -> Alert {
    Alert {
        event_id: "ev/1".into(),
        event_type: "com.qlik.v1.app.reload.finished".into(),
        tenant_id: "t1".into(),
        app_id: Some("app1".into()),
        reload_id: Some("r1".into()),
        event_time: None,
        app_tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        script_log: Some("l1\nl2\nl3\nl4".into()),
        context: json!({
            "appName": "Sales\r\nBcc: evil@example.com <b>",
            "appOwnerEmail": owner_email,
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
        recipient: None,
        digest: None,
    }
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
