//! Handlebars rendering for the destinations' templates.
//!
//! JSON bodies (Slack blocks, Teams cards): Butler's templates are JSON documents with
//! `{{field}}` inside string literals. Handlebars' default HTML escaping cannot make arbitrary
//! text safe there (a newline or backslash in a script log breaks the JSON; Butler works around
//! it by pre-escaping some fields). Here every inserted value is escaped as JSON string content
//! instead, and triple-stash `{{{field}}}` is treated like `{{field}}`, so a Butler template
//! renders unchanged and the result always parses.
//!
//! Chat markup (Slack mrkdwn, Teams markdown): app names, error messages, script logs and owner
//! names are typed by whoever can edit an app in the tenant. Rendered as they are, an app named
//! `Ops <!channel> <https://evil.example/login|Re-login>` pings a whole Slack channel and shows a
//! disguised link. So before a chat template renders, [`escape_for`] escapes every value of the
//! context for the destination's markup, except the URL fields, which come from the
//! configuration (ids in them are percent-encoded) and would break as links if escaped. The
//! template author's own text is not touched, so a Butler template keeps its formatting. Teams'
//! `CodeBlock` shows text as it is, so `{{code scriptLogTail}}` gives a value without the markdown
//! escapes (still JSON-escaped); for Slack, `code` changes nothing (`&`, `<`, `>` stay escaped
//! in code blocks too, as Slack wants).
//!
//! HTML bodies (email): every value is HTML-escaped, triple-stash included, because app names,
//! error messages and script logs are written by whoever can edit an app; unescaped, they could
//! put links and forms into an email that arrives from a trusted sender.

use handlebars::Handlebars;
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("template does not compile: {0}")]
    Compile(String),
    #[error("template does not render: {0}")]
    Render(String),
    #[error("rendered template is not a JSON object: {0}")]
    NotJson(String),
}

/// Escapes text for use inside a JSON string literal (no surrounding quotes).
pub fn json_string_content(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap_or_default();
    quoted
        .get(1..quoted.len().saturating_sub(1))
        .unwrap_or_default()
        .to_owned()
}

/// The markup a destination reads its text in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Markup {
    /// No markup: email (whose HTML part is HTML-escaped anyway), logs, machine destinations.
    Plain,
    /// Slack mrkdwn: `&`, `<` and `>` are the control characters (mentions, links).
    Slack,
    /// Teams (Adaptive Card / MessageCard) markdown: emphasis, links, lists.
    Teams,
}

/// Context fields that are URLs built from the configuration (`tenantUrl`, the QMC and hub
/// links, `genericUrls`; `appUrl` is the tenant URL with the percent-encoded app id). They go
/// into `url` fields, where an escaped `&` would be a broken link, so they are left as they are.
const URL_FIELDS: &[&str] = &[
    "tenantUrl",
    "appUrl",
    "qlikSenseQMC",
    "qlikSenseHub",
    "genericUrls",
];

/// Escapes text for Slack mrkdwn: Slack's three control characters become entities, so
/// `<!channel>`, `<@U123>` and `<url|text>` show as typed instead of acting.
pub fn escape_slack(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Characters that Teams markdown reads as formatting anywhere in a line.
const TEAMS_SPECIAL: &[char] = &['\\', '*', '_', '[', ']', '(', ')', '<', '>', '`', '~', '|'];

/// Escapes text for Teams markdown with backslashes (CommonMark): emphasis, links, code spans
/// and HTML-like tags anywhere, list and heading markers at the start of a line.
pub fn escape_teams(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start_matches([' ', '\t']);
        let indent = &line[..line.len() - trimmed.len()];
        out.push_str(indent);
        // `- x`, `+ x`, `# x`, `1. x`: a list item or heading only at the start of a line.
        let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
        if trimmed.starts_with(['-', '+', '#']) {
            out.push('\\');
        } else if digits > 0 && trimmed[digits..].starts_with(['.', ')']) {
            out.push_str(&trimmed[..digits]);
            out.push('\\');
            out.extend(trimmed[digits..].chars().next());
            push_teams_escaped(&mut out, &trimmed[digits + 1..]);
            continue;
        }
        push_teams_escaped(&mut out, trimmed);
    }
    out
}

fn push_teams_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if TEAMS_SPECIAL.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Undoes [`escape_teams`]: every backslash escape gives its character back.
pub fn unescape_teams(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// `text` escaped with `escape` and at most `max_chars` (at least 1) characters long; when cut, it ends in
/// `…` so the reader sees that something is missing. The plain text is cut before escaping, so
/// neither an entity (`&lt;`) nor a backslash escape is split in two.
pub fn escape_cut(text: &str, max_chars: usize, escape: fn(&str) -> String) -> String {
    let escaped = escape(text);
    if escaped.chars().count() <= max_chars {
        return escaped;
    }
    let chars: Vec<char> = text.chars().collect();
    let fits = |keep: usize| {
        escape(&chars[..keep].iter().collect::<String>())
            .chars()
            .count()
            < max_chars
    };
    // The longest prefix whose escaped form leaves room for `…`. Escaping a longer prefix never
    // gives a shorter text, so a binary search finds it.
    let (mut low, mut high) = (0, max_chars.saturating_sub(1).min(chars.len()));
    while low < high {
        let middle = (low + high).div_ceil(2);
        if fits(middle) {
            low = middle;
        } else {
            high = middle - 1;
        }
    }
    let mut out = escape(&chars[..low].iter().collect::<String>());
    out.push('…');
    out
}

/// Escapes every value of a template context for `markup` (strings inside lists and objects
/// too), except the [`URL_FIELDS`], at any depth: a digest lists its apps in `alerts[]`, each
/// with its own `appUrl`. Keys are left alone: templates name them.
pub fn escape_for(context: &mut Map<String, Value>, markup: Markup) {
    let escape: fn(&str) -> String = match markup {
        Markup::Plain => return,
        Markup::Slack => escape_slack,
        Markup::Teams => escape_teams,
    };
    escape_map(context, escape);
}

fn escape_map(map: &mut Map<String, Value>, escape: fn(&str) -> String) {
    for (key, value) in map.iter_mut() {
        if !URL_FIELDS.contains(&key.as_str()) {
            escape_value(value, escape);
        }
    }
}

fn escape_value(value: &mut Value, escape: fn(&str) -> String) {
    match value {
        Value::String(text) => *text = escape(text),
        Value::Array(items) => items.iter_mut().for_each(|v| escape_value(v, escape)),
        Value::Object(map) => escape_map(map, escape),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[derive(Clone, Copy)]
enum Escape {
    Json,
    Html,
    None,
}

fn registry(escape: Escape, markup: Markup) -> Handlebars<'static> {
    let mut registry = Handlebars::new();
    // Butler's templates refer to fields that are sometimes absent; they render empty there.
    registry.set_strict_mode(false);
    match escape {
        Escape::Json => registry.register_escape_fn(json_string_content),
        Escape::Html => registry.register_escape_fn(handlebars::html_escape),
        Escape::None => registry.register_escape_fn(handlebars::no_escape),
    }
    // The helper's result still goes through the escape function above, so it stays valid
    // JSON (or HTML) whatever it holds.
    if markup == Markup::Teams {
        handlebars::handlebars_helper!(code: |text: str| unescape_teams(text));
        registry.register_helper("code", Box::new(code));
    } else {
        handlebars::handlebars_helper!(code: |text: str| text.to_owned());
        registry.register_helper("code", Box::new(code));
    }
    registry
}

/// Triple-stash means "do not HTML-escape" to a Butler template author; with JSON escaping
/// every value must go through the escape function, so `{{{x}}}` becomes `{{x}}`.
pub(super) fn without_triple_stash(template: &str) -> String {
    template
        .replace("{{{{", "\u{0}RAW\u{0}")
        .replace("}}}}", "\u{0}ENDRAW\u{0}")
        .replace("{{{", "{{")
        .replace("}}}", "}}")
        .replace("\u{0}RAW\u{0}", "{{{{")
        .replace("\u{0}ENDRAW\u{0}", "}}}}")
}

/// Renders a JSON template (Slack / Teams `templateFile`) and parses the result. `markup` is
/// what the context was escaped for ([`escape_for`]); it decides what `{{code x}}` gives.
pub fn render_json(
    template: &str,
    context: &Map<String, Value>,
    markup: Markup,
) -> Result<Value, TemplateError> {
    let rendered = registry(Escape::Json, markup)
        .render_template(&without_triple_stash(template), context)
        .map_err(|e| classify(&e))?;
    match serde_json::from_str::<Value>(&rendered) {
        Ok(value @ Value::Object(_)) => Ok(value),
        Ok(_) => Err(TemplateError::NotJson("not an object".into())),
        Err(e) => Err(TemplateError::NotJson(e.to_string())),
    }
}

/// Renders a plain-text template (Butler's `basicMsgTemplate`, an email subject, the text part
/// of an email).
pub fn render_text(template: &str, context: &Map<String, Value>) -> Result<String, TemplateError> {
    registry(Escape::None, Markup::Plain)
        .render_template(template, context)
        .map_err(|e| classify(&e))
}

/// Renders an HTML template (an email body): every value HTML-escaped, `{{{x}}}` too.
pub fn render_html(template: &str, context: &Map<String, Value>) -> Result<String, TemplateError> {
    registry(Escape::Html, Markup::Plain)
        .render_template(&without_triple_stash(template), context)
        .map_err(|e| classify(&e))
}

/// Text for a one-line header (an email subject): every line break, tab and other control
/// character becomes a space, runs of spaces shrink to one. Rendered from templates with app
/// names and error messages in them, it must never start a new header line.
pub fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn classify(error: &handlebars::RenderError) -> TemplateError {
    let text = error.to_string();
    match error.reason() {
        handlebars::RenderErrorReason::TemplateError(_) => TemplateError::Compile(text),
        _ => TemplateError::Render(text),
    }
}

/// Checks that a template compiles, for start-up, `check-config` and `preview`. The message is
/// one line and names where Handlebars stopped (`line 3, column 14: …`).
pub fn check(template: &str) -> Result<(), TemplateError> {
    handlebars::Template::compile(&without_triple_stash(template))
        .map(|_| ())
        .map_err(|e| {
            let reason = one_line(&e.reason().to_string());
            TemplateError::Compile(match e.pos() {
                Some((line, column)) => format!("line {line}, column {column}: {reason}"),
                None => reason,
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Map<String, Value> {
        serde_json::json!({
            "appName": "Sales \"EU\" <dash>",
            "scriptLogTail": "line 1\n\tC:\\data\\x.qvd\nline 3",
            "executionDuration": {"hours": 0, "minutes": 1, "seconds": 2},
            "genericUrls": [{"linkText": "Docs", "url": "https://example.com"}]
        })
        .as_object()
        .cloned()
        .unwrap_or_default()
    }

    #[test]
    fn json_templates_escape_every_value_and_parse() {
        let template = r#"{"a":"{{appName}}","b":"```{{{ scriptLogTail }}}```","c":"{{executionDuration.minutes}} min","d":"{{missing}}",
            "urls":[{{#each genericUrls}}"{{this.linkText}}"{{/each}}],
            "eq":"{{#if (eq appName "x")}}yes{{else}}no{{/if}}"}"#;
        let value = render_json(template, &context(), Markup::Plain).unwrap();
        assert_eq!(value["a"], "Sales \"EU\" <dash>");
        assert_eq!(value["b"], "```line 1\n\tC:\\data\\x.qvd\nline 3```");
        assert_eq!(value["c"], "1 min");
        assert_eq!(value["d"], "");
        assert_eq!(value["urls"][0], "Docs");
        assert_eq!(value["eq"], "no");
    }

    #[test]
    fn broken_templates_are_reported() {
        assert!(matches!(
            render_json("{\"a\": {{#if}}", &context(), Markup::Plain),
            Err(TemplateError::Compile(_) | TemplateError::Render(_))
        ));
        assert!(matches!(
            render_json("not json {{appName}}", &context(), Markup::Plain),
            Err(TemplateError::NotJson(_))
        ));
        assert!(check("{{#each x}}").is_err());
        assert!(check("{{{appName}}}").is_ok());
    }

    fn full_context() -> Map<String, Value> {
        let mut ctx = crate::enrich::AlertContext {
            app_name: "Sales \"EU\" \\ dash".into(),
            app_id: "7c1d".into(),
            app_url: "https://t.example/sense/app/7c1d".into(),
            error_message: "Field 'Amount' not found\nin \"x\"".into(),
            script_log_tail: "a\r\nb\t\\c\n\"quoted\"".into(),
            qlik_sense_qmc: "https://t.example/console".into(),
            missing: vec!["script log: HTTP 503".into()],
            ..Default::default()
        }
        .to_json();
        ctx.insert(
            "genericUrls".into(),
            serde_json::json!([{"id": "butler_docs", "linkText": "Docs \"x\"", "url": "https://d.example"}]),
        );
        ctx
    }

    #[test]
    fn shipped_templates_render_to_valid_json_with_any_content() {
        let ctx = full_context();
        let slack = include_str!("../../templates/slack-failed-reload-qscloud.handlebars");
        let teams = include_str!("../../templates/teams-failed-reload-qscloud.handlebars");
        for template in [slack, teams] {
            check(template).unwrap();
            let value = render_json(template, &ctx, Markup::Plain).unwrap();
            let text = value.to_string();
            assert!(text.contains("Sales \\\"EU\\\""), "{text}");
            assert!(text.contains("script log: HTTP 503"), "{text}");
            assert!(text.contains("https://d.example"), "{text}");
        }
        let teams = render_json(teams, &ctx, Markup::Plain).unwrap();
        let code = &teams["attachments"][0]["content"]["body"][3]["codeSnippet"];
        assert_eq!(code, "a\r\nb\t\\c\n\"quoted\"");
    }

    /// The constructs Butler's own qscloud templates use: comments, `eq`, triple-stash inside
    /// code blocks, nested time fields, `genericUrls` buttons.
    #[test]
    fn butler_style_templates_render_unchanged() {
        let template = r#"{
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": "*App name:*\n{{appName}}"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "*Started:*\n{{executionStartTime.startTimeLocal1}}"}},
                {"type": "actions", "elements": [
                    {"type": "button", "url": "{{qlikSenseQMC}}"}
            {{#each genericUrls}}
            {{!-- only some buttons, as Butler's sample shows --}}
            {{#if (eq id "butler_docs")}}
                    ,{"type": "button", "text": "{{this.linkText}}", "url": "{{this.url}}"}
            {{/if}}
            {{/each}}
                ]},
                {"type": "section", "text": {"type": "mrkdwn", "text": "```{{ logMessage }}```"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": "```{{{ scriptLogTail }}}```"}}
            ]
        }"#;
        let value = render_json(template, &full_context(), Markup::Plain).unwrap();
        assert_eq!(
            value["blocks"][0]["text"]["text"],
            "*App name:*\nSales \"EU\" \\ dash"
        );
        assert_eq!(value["blocks"][2]["elements"][1]["text"], "Docs \"x\"");
        assert_eq!(
            value["blocks"][4]["text"]["text"],
            "```a\r\nb\t\\c\n\"quoted\"```"
        );
    }

    #[test]
    fn html_templates_escape_every_value_even_in_triple_stash() {
        let html = render_html(
            "<h1>{{appName}}</h1><pre>{{{ scriptLogTail }}}</pre>{{#each genericUrls}}<a href=\"{{url}}\">{{linkText}}</a>{{/each}}",
            &serde_json::json!({
                "appName": "<script>alert(1)</script> & \"Sales\"",
                "scriptLogTail": "a < b\n<b>bold</b>",
                "genericUrls": [{"linkText": "Docs", "url": "https://x.example/?a=1&b=\"2\""}]
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        )
        .unwrap();
        assert_eq!(
            html,
            "<h1>&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;Sales&quot;</h1>\
             <pre>a &lt; b\n&lt;b&gt;bold&lt;/b&gt;</pre>\
             <a href=\"https://x.example/?a&#x3D;1&amp;b&#x3D;&quot;2&quot;\">Docs</a>"
        );
    }

    #[test]
    fn escape_cut_keeps_entities_whole_and_marks_the_cut() {
        assert_eq!(escape_cut("a <b>", 20, escape_slack), "a &lt;b&gt;");
        let cut = escape_cut("<<<<<<", 10, escape_slack);
        assert_eq!(cut, "&lt;&lt;…");
        assert!(cut.chars().count() <= 10);
        let cut = escape_cut(&"*".repeat(500), 150, escape_teams);
        assert_eq!(cut.chars().count(), 149);
        assert!(cut.ends_with("\\*…"), "{cut}");
    }

    #[test]
    fn one_line_removes_every_line_break() {
        assert_eq!(
            one_line("Reload failed: \"A\r\nBcc: x@evil.example\n\tC\"\u{0}\u{85}end  "),
            "Reload failed: \"A Bcc: x@evil.example C\" end"
        );
        assert_eq!(one_line("\r\n"), "");
    }

    #[test]
    fn text_templates_are_not_escaped() {
        let text = render_text("Reload failed: \"{{appName}}\"", &context()).unwrap();
        assert_eq!(text, "Reload failed: \"Sales \"EU\" <dash>\"");
    }

    #[test]
    fn teams_escaping_is_undone_exactly_by_code() {
        for text in [
            "a\\b *c* _d_ [e](f) <g> `h` ~i~ |j|",
            "- x\n  + y\n# z\n12. w\n3) v\nnot-a-list 4. u",
            "",
            "\\",
        ] {
            assert_eq!(unescape_teams(&escape_teams(text)), text);
        }
        assert_eq!(
            escape_teams("- a\n 1. b [c](d)"),
            "\\- a\n 1\\. b \\[c\\]\\(d\\)"
        );
        let value = render_json(
            r#"{"t": "{{x}}", "c": "{{code x}}"}"#,
            &serde_json::json!({"x": escape_teams("*a*\n\"q\"")})
                .as_object()
                .cloned()
                .unwrap_or_default(),
            Markup::Teams,
        )
        .unwrap();
        assert_eq!(value["t"], "\\*a\\*\n\"q\"");
        assert_eq!(value["c"], "*a*\n\"q\"");
    }

    #[test]
    fn url_fields_are_not_escaped() {
        let mut context = serde_json::json!({
            "appUrl": "https://t.example/sense/app/a?b=1&c=2",
            "genericUrls": [{"url": "https://x.example/?a=<1>", "linkText": "<x>"}],
            "appName": "<a> & b",
            "appTags": ["<t>"],
            "executionDuration": {"hours": 1},
        })
        .as_object()
        .cloned()
        .unwrap_or_default();
        context.insert(
            "alerts".into(),
            serde_json::json!([{"appUrl": "https://t.example/a?b=1&c=2", "appName": "<x>"}]),
        );
        escape_for(&mut context, Markup::Slack);
        assert_eq!(context["appUrl"], "https://t.example/sense/app/a?b=1&c=2");
        // A digest's apps carry their own links, nested.
        assert_eq!(
            context["alerts"][0]["appUrl"],
            "https://t.example/a?b=1&c=2"
        );
        assert_eq!(context["alerts"][0]["appName"], "&lt;x&gt;");
        assert_eq!(context["genericUrls"][0]["linkText"], "<x>");
        assert_eq!(context["appName"], "&lt;a&gt; &amp; b");
        assert_eq!(context["appTags"][0], "&lt;t&gt;");
        assert_eq!(context["executionDuration"]["hours"], 1);
    }
}
