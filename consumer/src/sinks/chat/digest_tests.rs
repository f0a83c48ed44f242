//! Digests in Slack and Teams: splitting to the services' limits, escaping, `digestTemplateFile`.

use std::collections::BTreeMap;

use super::*;
use crate::digest::{DigestEntry, split};
use crate::sinks::slack::{SLACK_MAX_BLOCKS, Slack};
use crate::sinks::teams::{TEAMS_MAX_MESSAGE_BYTES, Teams};

fn slack() -> Slack {
    Slack {
        channel: Some("ops".into()),
        from_user: None,
        icon_emoji: None,
    }
}

fn chat_alert<F: ChatFormat>(format: F, digest_template_file: Option<PathBuf>) -> ChatAlert<F> {
    ChatAlert {
        tenant_id: "t1".into(),
        key: "k".into(),
        alert_enable_by_tag: AlertEnableByTag::default(),
        basic_content_only: true,
        webhook_url: SecretUrl::new(url::Url::parse("https://hooks.example/x").unwrap()),
        message_type: MessageType::Basic,
        basic_msg_template: Some("{{appName}}".into()),
        template_file: None,
        digest_template_file,
        head_script_log_lines: 10,
        tail_script_log_lines: 10,
        rate_limit: Duration::ZERO,
        format,
    }
}

fn chat_sink<F: ChatFormat>(format: F) -> ChatSink<F> {
    ChatSink::new(chat_alert(format, None), reqwest::Client::new()).unwrap()
}

/// Entries as long as a digest lets them be: names and error lines at their maximum.
fn entries(n: usize) -> Vec<DigestEntry> {
    (0..n)
        .map(|i| DigestEntry {
            event_id: format!("e{i}"),
            tenant_id: "t1".into(),
            tenant_comment: Some("Production".into()),
            app_id: Some(format!("a{i}")),
            app_name: format!("App {i:03} {}", "x".repeat(20)),
            app_url: Some(format!(
                "https://t1.eu.qlikcloud.com/sense/app/a{i}?x=1&y=2"
            )),
            reload_id: Some(format!("r{i}")),
            time: Some("2026-03-02T07:06:22.123Z".into()),
            error_line: format!("General Script Error in statement handling near line {i}"),
        })
        .collect()
}

fn parts_of<F: ChatFormat>(sink: &ChatSink<F>, n: usize) -> Vec<Digest> {
    split(
        "1772435100000",
        "2026-03-02T07:05:00Z",
        "2026-03-02T07:06:00Z",
        entries(n),
        |d| sink.digest_fits(d),
    )
}

/// Each part's message, through the send path (`Alert::for_digest`), as JSON text.
fn messages<F: ChatFormat>(sink: &ChatSink<F>, parts: &[Digest]) -> Vec<String> {
    parts
        .iter()
        .map(|part| {
            let alert = Alert::for_digest("t1", None, part.clone());
            sink.message(&alert).unwrap().to_string()
        })
        .collect()
}

/// How often each app's name appears over all messages (Slack also lists them in `text`).
fn app_counts(messages: &[String], n: usize, per_message: usize) -> BTreeMap<usize, usize> {
    let mut counts = BTreeMap::new();
    for text in messages {
        let value: Value = serde_json::from_str(text).expect("valid JSON");
        let all = value.to_string();
        for i in 0..n {
            let hits = all.matches(&format!("App {i:03} ")).count();
            assert!(hits == 0 || hits == per_message, "app {i}: {hits} in {all}");
            *counts.entry(i).or_default() += hits.min(1);
        }
    }
    counts
}

#[test]
fn slack_digest_of_200_apps_takes_the_fewest_parts_of_at_most_50_blocks() {
    let sink = chat_sink(slack());
    let parts = parts_of(&sink, 200);
    // The layout has a header and a context line, then one section per app.
    let per_part = SLACK_MAX_BLOCKS - 2;
    assert_eq!(parts.len(), 200usize.div_ceil(per_part));
    assert!(parts.len() >= 4);
    let messages = messages(&sink, &parts);
    for (part, text) in parts.iter().zip(&messages) {
        let value: Value = serde_json::from_str(text).unwrap();
        assert!(crate::sinks::slack::within_limits(&value), "{text}");
        let blocks = value["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), part.entries.len() + 2);
        assert_eq!(value["channel"], "ops", "finish() applies to digests");
        let header = blocks[0]["text"]["text"].as_str().unwrap();
        assert_eq!(
            header,
            format!(
                "200 Qlik Cloud app reloads failed (part {} of {})",
                part.part, part.parts
            )
        );
    }
    // Every app in exactly one part (twice there: its section and the `text` fallback).
    let counts = app_counts(&messages, 200, 2);
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
}

#[test]
fn teams_digest_of_200_apps_splits_into_parts_under_28_kb() {
    let sink = chat_sink(Teams);
    let parts = parts_of(&sink, 200);
    assert!(parts.len() > 1);
    let messages = messages(&sink, &parts);
    for text in &messages {
        assert!(text.len() <= TEAMS_MAX_MESSAGE_BYTES, "{}", text.len());
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(value["attachments"][0]["content"]["version"], "1.3");
    }
    let counts = app_counts(&messages, 200, 1);
    assert!(counts.values().all(|&c| c == 1), "{counts:?}");
    // As few parts as possible: no part could have taken the next part's first app.
    for pair in parts.windows(2) {
        let mut grown = pair[0].clone();
        grown.entries.push(pair[1].entries[0].clone());
        assert!(!sink.digest_fits(&grown));
    }
}

#[test]
fn a_single_app_digest_says_reload_and_has_no_part_numbers() {
    let sink = chat_sink(slack());
    let parts = parts_of(&sink, 1);
    let message = sink.digest_message(&parts[0], "t1").unwrap();
    assert_eq!(
        message["blocks"][0]["text"]["text"],
        "1 Qlik Cloud app reload failed"
    );
    let section = message["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        section.starts_with("*<https://t1.eu.qlikcloud.com/sense/app/a0?x=1&y=2|App 000 "),
        "{section}"
    );
    assert!(section.contains(" · t1 (Production) · 2026-03-02T07:06:22.123Z\n>General"));
}

const HOSTILE_APP: &str = "Ops <!channel> <https://evil.example/login|Re-login>";
const HOSTILE_ERROR: &str = "Script error <!here> *bold* & [link](https://evil) <@U123>";

fn hostile() -> Digest {
    let mut entries = entries(2);
    entries[0].app_name = HOSTILE_APP.into();
    entries[0].error_line = HOSTILE_ERROR.into();
    entries[0].tenant_comment = Some("<!everyone> _x_".into());
    entries[1].app_url = None;
    entries[1].app_name = "- [x](https://evil)".into();
    split("w", "s <!here>", "e", entries, |_| true).remove(0)
}

#[test]
fn slack_digests_escape_mentions_and_links_from_the_tenant() {
    let message = chat_sink(slack()).digest_message(&hostile(), "t1").unwrap();
    let text = message.to_string();
    for active in [
        "<!channel>",
        "<!here>",
        "<!everyone>",
        "<https://evil",
        "<@U123>",
    ] {
        assert!(!text.contains(active), "{active} in {text}");
    }
    let section = message["blocks"][2]["text"]["text"].as_str().unwrap();
    assert!(
        section.starts_with(
            "*<https://t1.eu.qlikcloud.com/sense/app/a0?x=1&y=2|Ops &lt;!channel&gt; &lt;https://evil.example/login|Re-login&gt;>*"
        ),
        "{section}"
    );
    assert!(
        section.ends_with(
            "\n>Script error &lt;!here&gt; *bold* &amp; [link](https://evil) &lt;@U123&gt;"
        ),
        "{section}"
    );
    // No link: the plain name.
    let plain = message["blocks"][3]["text"]["text"].as_str().unwrap();
    assert!(plain.starts_with("*- [x](https://evil)* · t1"), "{plain}");
    assert!(text.contains("s &lt;!here&gt;"), "{text}");
}

#[test]
fn teams_digests_escape_markdown_from_the_tenant() {
    let message = chat_sink(Teams).digest_message(&hostile(), "t1").unwrap();
    let body = &message["attachments"][0]["content"]["body"];
    let first = &body[2]["items"];
    assert_eq!(
        first[0]["text"],
        r"[Ops \<!channel\> \<https://evil.example/login\|Re-login\>](https://t1.eu.qlikcloud.com/sense/app/a0?x=1&y=2)"
    );
    assert_eq!(
        first[1]["text"],
        r"t1 (\<!everyone\> \_x\_) · 2026-03-02T07:06:22.123Z"
    );
    assert_eq!(
        first[2]["text"],
        r"Script error \<!here\> \*bold\* & \[link\]\(https://evil\) \<@U123\>"
    );
    assert_eq!(body[3]["items"][0]["text"], r"\- \[x\]\(https://evil\)");
}

#[test]
fn digest_template_file_replaces_the_shipped_template() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digest.handlebars");
    std::fs::write(
        &file,
        r#"{"text": "custom {{total}}: {{#each alerts}}{{appName}};{{/each}}"}"#,
    )
    .unwrap();
    let sink = ChatSink::new(
        chat_alert(slack(), Some(file.clone())),
        reqwest::Client::new(),
    )
    .unwrap();
    let message = sink.digest_message(&hostile(), "t1").unwrap();
    assert_eq!(
        message["text"],
        "custom 2: Ops &lt;!channel&gt; &lt;https://evil.example/login|Re-login&gt;;- [x](https://evil);"
    );
    assert!(
        sink.alert
            .alert_summary()
            .unwrap()
            .contains(&format!("digests formatted with {}", file.display()))
    );
    // A file gone by build time, or one that does not compile, stops start-up with its key.
    for (content, gone) in [(None, true), (Some("{{#each alerts}"), false)] {
        let path = dir.path().join(if gone { "gone" } else { "broken" });
        if let Some(content) = content {
            std::fs::write(&path, content).unwrap();
        }
        let alert = chat_alert(Teams, Some(path));
        match ChatSink::new(alert, reqwest::Client::new()) {
            Err(BuildError::Template { key, .. }) => assert_eq!(key, "k.digestTemplateFile"),
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("built with a bad digest template"),
        }
    }
}

#[test]
fn a_missing_digest_template_file_is_reported_at_its_key() {
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        "slackNotification:
  reloadAppFailure:
    enable: true
    webhookURL: https://hooks.slack.com/services/T/B/x
    messageType: basic
    basicMsgTemplate: x
    digestTemplateFile: /nonexistent/slack-digest.handlebars
",
    )
    .unwrap();
    let node = Node::root("Butler.tenant.alert", Some(&yaml));
    let mut p = Problems::default();
    let destination = parse::<Slack>(&node, "t1", &mut p);
    assert!(destination.is_some());
    let problems: Vec<_> =
        p.0.iter()
            .map(|p| (p.path.as_str(), p.message.as_str()))
            .collect();
    assert_eq!(
        problems,
        [(
            "Butler.tenant.alert.slackNotification.reloadAppFailure.digestTemplateFile",
            "file `/nonexistent/slack-digest.handlebars` does not exist"
        )]
    );
}

/// A template that fails only on some content: the split still ends, one entry a part, so the
/// send fails visibly for each and parks it.
#[test]
fn a_digest_that_does_not_render_splits_down_to_single_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-json.handlebars");
    std::fs::write(&file, "not JSON {{total}}").unwrap();
    let sink = ChatSink::new(chat_alert(slack(), Some(file)), reqwest::Client::new()).unwrap();
    let parts = parts_of(&sink, 3);
    assert_eq!(parts.len(), 3);
    let alert = Alert::for_digest("t1", None, parts[0].clone());
    assert!(matches!(sink.message(&alert), Err(SinkError::Permanent(_))));
}

#[test]
fn digests_pass_the_tag_gate_and_basic_content_only() {
    let mut alert = chat_alert(slack(), None);
    alert.alert_enable_by_tag = AlertEnableByTag {
        enable: true,
        tag: "Alert".into(),
    };
    let sink = ChatSink::new(alert, reqwest::Client::new())
        .unwrap()
        .with_digest(Some(crate::digest::DigestSettings {
            after_alerts: 3,
            window: Duration::from_secs(60),
        }));
    let digest = Alert::for_digest("t1", None, hostile());
    assert!(sink.accepts(&digest));
    assert!(!sink.accepts(&Alert::for_digest("other", None, hostile())));
    assert_eq!(sink.digest().map(|d| d.after_alerts), Some(3));
    // basicContentOnly (on in these tests) still sends the digest, not the basic message.
    let message = sink.message(&digest).unwrap();
    assert_eq!(message["blocks"].as_array().map(Vec::len), Some(4));
}

#[test]
fn shipped_digest_templates_compile() {
    for template in [Slack::DIGEST_TEMPLATE, Teams::DIGEST_TEMPLATE] {
        crate::sinks::template::check(template).unwrap();
    }
}
