//! Configuration files written for a test broker: a Butler file (Butler's keys only) and an
//! extension file (the consumer's keys), with what the tests configure.

use std::path::PathBuf;

use super::TENANT;

/// Which destinations a test configures.
#[derive(Debug, Default, Clone)]
pub struct Destinations {
    pub slack: Option<String>,
    pub slack_formatted: bool,
    pub teams: Option<String>,
    pub teams_formatted: bool,
    pub webhook: Option<String>,
    pub mqtt_topic: Option<String>,
    pub script_log: bool,
    /// Tenant API base URL; `None` switches enrichment off.
    pub tenant_url: Option<String>,
    /// The tenant JWT (default: a well-formed dummy).
    pub jwt: Option<String>,
    /// Butler's `alertEnableByTag` for Slack / Teams.
    pub slack_tag: Option<String>,
    pub teams_tag: Option<String>,
    pub max_attempts: u32,
    /// MQTT 5 (session expiry instead of clean session off).
    pub v5: bool,
    /// MQTT 5 shared subscription group.
    pub shared_group: Option<String>,
    /// Topic root to share with another setup (default: a fresh one).
    pub topic_root: Option<String>,
    /// Butler's `rateLimit` seconds for Slack and Teams (default 0: none).
    pub chat_rate_limit: u64,
    /// Butler's `basicContentOnly` for Slack and Teams.
    pub basic_content_only: bool,
    /// `consumer.shutdownGraceSeconds` (default: the consumer's).
    pub shutdown_grace: Option<u64>,
    /// `consumer.concurrency` (default: the consumer's).
    pub concurrency: Option<u64>,
    /// `consumer.redelivery.scheduleSeconds` (default: the consumer's).
    pub redelivery_schedule: Option<Vec<u64>>,
    /// `consumer.redelivery.holdSeconds` (default: the consumer's).
    pub hold_seconds: Option<u64>,
    /// The webhook destination's `timeoutSeconds` (default: the consumer's).
    pub webhook_timeout: Option<u64>,
    /// `consumer.deadLetterDirectory` to share with another setup (default: one of its own).
    pub dead_letter_dir: Option<PathBuf>,
    /// `consumer.digest`: `(afterAlerts, windowSeconds)`. `None`: `enable: false`, so the
    /// tests written for one message per alert see exactly that.
    pub digest: Option<(u32, u64)>,
    /// `consumer.stateStore` (a `redis://` URL); default: files in the state directory.
    pub state_store: Option<String>,
    /// `consumer.watchdog`: `(relayUrl, intervalSeconds, reenable)`.
    pub watchdog: Option<(String, u64, bool)>,
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub butler: PathBuf,
    pub extensions: PathBuf,
    pub state_dir: PathBuf,
    pub dead_letter_dir: PathBuf,
    pub script_log_dir: PathBuf,
    /// Events are published here; the consumer subscribes to `<root>/#`.
    pub topic: String,
    pub client_id: String,
}

pub fn templates_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("templates")
}

/// Writes a Butler file (Butler's keys only) and an extension file for `broker`.
/// One webhook destination at `url` and no retry: the set-up most end-to-end tests need.
pub fn webhook_only(broker: &testkit::TestBroker, url: &str) -> Setup {
    write_config(
        broker,
        &Destinations {
            webhook: Some(url.to_owned()),
            max_attempts: 1,
            ..Default::default()
        },
    )
}

pub fn write_config(broker: &testkit::TestBroker, d: &Destinations) -> Setup {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = d
        .topic_root
        .clone()
        .unwrap_or_else(|| testkit::unique("qscloud-test"));
    let client_id = testkit::unique("consumer");
    let state_dir = dir.path().join("state");
    let dead_letter_dir = d
        .dead_letter_dir
        .clone()
        .unwrap_or_else(|| dir.path().join("dead-letter"));
    let script_log_dir = dir.path().join("scriptlog");
    let templates = templates_dir();
    let tenant_url = d
        .tenant_url
        .clone()
        .unwrap_or_else(|| "http://127.0.0.1:9".into());
    let jwt = d.jwt.clone().unwrap_or_else(|| {
        "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ0ZXN0In0.dGVzdC1zaWduYXR1cmU".to_owned()
    });
    let chat = |kind: &str,
                url: &Option<String>,
                formatted: bool,
                file: &str,
                tag: &Option<String>| {
        match url {
        None => format!("                        {kind}:\n                            reloadAppFailure:\n                                enable: false\n"),
        Some(url) => format!(
            "                        {kind}:
                            reloadAppFailure:
                                enable: true
                                alertEnableByTag:
                                    enable: {}
                                    tag: {}
                                basicContentOnly: {}
                                webhookURL: {url}
                                channel: sense-failures
                                fromUser: Qlik Sense
                                iconEmoji: ':ghost:'
                                messageType: {}
                                basicMsgTemplate: 'Qlik Cloud app reload failed: \"{{{{appName}}}}\"'
                                rateLimit: {}
                                headScriptLogLines: 5
                                tailScriptLogLines: 3
                                templateFile: {}
",
            tag.is_some(),
            tag.clone().unwrap_or_else(|| "Butler - alert".into()),
            d.basic_content_only,
            if formatted { "formatted" } else { "basic" },
            d.chat_rate_limit,
            templates.join(file).display()
        ),
    }
    };
    let butler = format!(
        "Butler:
    logLevel: info
    scriptLog:
        storeOnDisk:
            qsCloud:
                appReloadFailure:
                    enable: {}
                    logDirectory: {}
    mqttConfig:
        qlikSenseCloud:
            event:
                mqttForward:
                    enable: true
                    broker:
                        host: {}
                        port: {}
                    topic:
                        subscriptionRoot: {root}/#
                        appReload: {root}/app/reload
    qlikSenseCloud:
        enable: true
        event:
            mqtt:
                tenant:
                    id: {TENANT}
                    tenantUrl: {tenant_url}
                    authType: jwt
                    auth:
                        jwt:
                            token: {jwt}
                    qlikSenseUrls:
                        qmc: https://acme.eu.qlikcloud.com/console
                        hub: https://acme.eu.qlikcloud.com/hub
                    comment: Test tenant
                    alert:
{}{}",
        d.script_log,
        script_log_dir.display(),
        broker.host,
        if d.v5 { broker.v5_port } else { broker.port },
        chat(
            "teamsNotification",
            &d.teams,
            d.teams_formatted,
            "teams-failed-reload-qscloud.handlebars",
            &d.teams_tag
        ),
        chat(
            "slackNotification",
            &d.slack,
            d.slack_formatted,
            "slack-failed-reload-qscloud.handlebars",
            &d.slack_tag
        ),
    );
    let webhook = d
        .webhook
        .as_ref()
        .map(|url| {
            format!(
                "                webhook:
                    - name: ops
                      url: {url}
                      headers:
                          - name: Authorization
                            value: Bearer webhook-header-secret
{}",
                d.webhook_timeout
                    .map(|s| format!("                      timeoutSeconds: {s}\n"))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mqtt = d
        .mqtt_topic
        .as_ref()
        .map(|topic| format!("                mqtt:\n                    enable: true\n                    topic: {topic}\n"))
        .unwrap_or_default();
    let v5 = match (d.v5, &d.shared_group) {
        (false, _) => String::new(),
        (true, None) => "                        mqttVersion: '5'\n                        sessionExpirySeconds: 3600\n".to_owned(),
        (true, Some(group)) => format!("                        mqttVersion: '5'\n                        sessionExpirySeconds: 3600\n                        sharedSubscriptionGroup: {group}\n"),
    };
    let extensions = format!(
        "Butler:
    mqttConfig:
        qlikSenseCloud:
            event:
                mqttForward:
                    broker:
                        tls: false
                        clientId: {client_id}
                        cleanSession: false
{v5}    qlikSenseCloud:
        consumer:
            stateDirectory: {}
            deadLetterDirectory: {}
{}{}            retry:
                maxAttempts: {}
                initialBackoffMs: 20
                maxBackoffMs: 100
            enrichment:
                enable: {}
                timeoutSeconds: 5
                maxRetries: 1
                initialBackoffMs: 10
            destinations:
                log:
                    enable: true
{webhook}{mqtt}",
        state_dir.display(),
        dead_letter_dir.display(),
        d.shutdown_grace
            .map(|s| format!("            shutdownGraceSeconds: {s}\n"))
            .unwrap_or_default(),
        engine_keys(d),
        d.max_attempts.max(1),
        d.tenant_url.is_some(),
    );
    let butler_path = dir.path().join("butler.yaml");
    let extensions_path = dir.path().join("consumer-extensions.yaml");
    std::fs::write(&butler_path, butler).expect("write Butler config");
    std::fs::write(&extensions_path, extensions).expect("write extension config");
    Setup {
        butler: butler_path,
        extensions: extensions_path,
        state_dir,
        dead_letter_dir,
        script_log_dir,
        topic: format!("{root}/app/reload/{TENANT}"),
        client_id,
        dir,
    }
}

/// `concurrency` and `redelivery`, when a test sets them.
fn engine_keys(d: &Destinations) -> String {
    let mut out = String::new();
    match d.digest {
        None => out.push_str("            digest:\n                enable: false\n"),
        Some((after, window)) => out.push_str(&format!(
            "            digest:\n                afterAlerts: {after}\n                windowSeconds: {window}\n"
        )),
    }
    if let Some(url) = &d.state_store {
        out.push_str(&format!("            stateStore: {url}\n"));
    }
    if let Some((relay, interval, reenable)) = &d.watchdog {
        out.push_str(&format!(
            "            watchdog:\n                relayUrl: {relay}\n                intervalSeconds: {interval}\n                reenable: {reenable}\n"
        ));
    }
    if let Some(n) = d.concurrency {
        out.push_str(&format!("            concurrency: {n}\n"));
    }
    if d.redelivery_schedule.is_some() || d.hold_seconds.is_some() {
        out.push_str("            redelivery:\n");
        if let Some(schedule) = &d.redelivery_schedule {
            let steps: Vec<String> = schedule.iter().map(u64::to_string).collect();
            out.push_str(&format!(
                "                scheduleSeconds: [{}]\n",
                steps.join(", ")
            ));
        }
        if let Some(hold) = d.hold_seconds {
            out.push_str(&format!("                holdSeconds: {hold}\n"));
        }
    }
    out
}

impl Setup {
    pub fn config(&self) -> consumer::config::ConsumerConfig {
        consumer::config::load(&self.butler, Some(&self.extensions))
            .unwrap_or_else(|e| panic!("test configuration is valid: {e}"))
    }

    pub fn parked_files(&self) -> Vec<PathBuf> {
        match std::fs::read_dir(&self.dead_letter_dir) {
            Ok(entries) => {
                let mut files: Vec<PathBuf> = entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "json"))
                    .collect();
                files.sort();
                files
            }
            Err(_) => vec![],
        }
    }
}
