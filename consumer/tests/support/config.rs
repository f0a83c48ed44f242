//! Configuration files written for a test broker: a Butler file (Butler's keys only) and an
//! extension file (the consumer's keys), with what the tests configure.

use std::path::PathBuf;

use serde_json::json;
use testkit::butler::{Chat, ChatKind, Config, Tenant, Webhook};

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
    /// What `butler` and `extensions` hold; [`Setup::edit`] changes them.
    pub files: Config,
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
    write_config(broker, &Destinations::one_webhook(url))
}

impl Destinations {
    /// One webhook destination at `url` and no retry; a test sets the rest with
    /// `Destinations { …, ..Destinations::one_webhook(url) }`.
    pub fn one_webhook(url: impl Into<String>) -> Destinations {
        Destinations {
            webhook: Some(url.into()),
            max_attempts: 1,
            ..Default::default()
        }
    }

    /// The same, enriched through the fake `tenant` (its URL and JWT).
    pub fn through(self, tenant: &super::fake_tenant::FakeTenant) -> Destinations {
        Destinations {
            tenant_url: Some(tenant.url()),
            jwt: Some(tenant.jwt()),
            ..self
        }
    }
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
    let tenant = Tenant::new(
        TENANT,
        d.tenant_url.as_deref().unwrap_or("http://127.0.0.1:9"),
        d.jwt
            .as_deref()
            .unwrap_or("eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJ0ZXN0In0.dGVzdC1zaWduYXR1cmU"),
    );
    let mut files = Config::new(&broker.into(), &root, &tenant);
    files
        .butler("logLevel", "info")
        .script_log(d.script_log, &script_log_dir)
        .tenant(
            "qlikSenseUrls",
            json!({
                "qmc": "https://acme.eu.qlikcloud.com/console",
                "hub": "https://acme.eu.qlikcloud.com/hub",
            }),
        )
        .tenant("comment", "Test tenant")
        .chat(ChatKind::Teams, d.chat(ChatKind::Teams).as_ref())
        .chat(ChatKind::Slack, d.chat(ChatKind::Slack).as_ref())
        .client(&client_id);
    if d.v5 {
        files.mqtt5(broker.v5_port, d.shared_group.as_deref());
    }
    files
        .consumer("stateDirectory", state_dir.display().to_string())
        .consumer("deadLetterDirectory", dead_letter_dir.display().to_string())
        .consumer("retry.maxAttempts", d.max_attempts.max(1))
        .consumer("retry.initialBackoffMs", 20)
        .consumer("retry.maxBackoffMs", 100)
        .consumer(
            "enrichment",
            json!({
                "enable": d.tenant_url.is_some(),
                "timeoutSeconds": 5,
                "maxRetries": 1,
                "initialBackoffMs": 10,
            }),
        )
        .consumer("destinations.log.enable", true);
    engine_keys(&mut files, d);
    if let Some(url) = &d.webhook {
        files.webhook(&Webhook {
            headers: vec![(
                "Authorization".into(),
                "Bearer webhook-header-secret".into(),
            )],
            timeout_seconds: d.webhook_timeout,
            ..Webhook::new("ops", url)
        });
    }
    if let Some(topic) = &d.mqtt_topic {
        files.consumer("destinations.mqtt", json!({"enable": true, "topic": topic}));
    }
    let (butler, extensions) = files.write(dir.path());
    Setup {
        butler,
        extensions,
        files,
        state_dir,
        dead_letter_dir,
        script_log_dir,
        topic: format!("{root}/app/reload/{TENANT}"),
        client_id,
        dir,
    }
}

/// The engine's keys, when a test sets them; digests are off unless asked for.
fn engine_keys(files: &mut Config, d: &Destinations) {
    match d.digest {
        None => files.consumer("digest.enable", false),
        Some((after, window)) => files
            .consumer("digest.afterAlerts", after)
            .consumer("digest.windowSeconds", window),
    };
    if let Some(url) = &d.state_store {
        files.consumer("stateStore", url.as_str());
    }
    if let Some((relay, interval, reenable)) = &d.watchdog {
        files.consumer(
            "watchdog",
            json!({"relayUrl": relay, "intervalSeconds": interval, "reenable": reenable}),
        );
    }
    if let Some(n) = d.shutdown_grace {
        files.consumer("shutdownGraceSeconds", n);
    }
    if let Some(n) = d.concurrency {
        files.consumer("concurrency", n);
    }
    if let Some(schedule) = &d.redelivery_schedule {
        files.consumer("redelivery.scheduleSeconds", schedule.clone());
    }
    if let Some(hold) = d.hold_seconds {
        files.consumer("redelivery.holdSeconds", hold);
    }
}

impl Destinations {
    /// The Slack or Teams alert this set-up asks for.
    fn chat(&self, kind: ChatKind) -> Option<Chat> {
        let (url, formatted, tag, file) = match kind {
            ChatKind::Slack => (
                &self.slack,
                self.slack_formatted,
                &self.slack_tag,
                "slack-failed-reload-qscloud.handlebars",
            ),
            ChatKind::Teams => (
                &self.teams,
                self.teams_formatted,
                &self.teams_tag,
                "teams-failed-reload-qscloud.handlebars",
            ),
        };
        url.as_ref().map(|url| Chat {
            webhook_url: url.clone(),
            formatted,
            template_file: templates_dir().join(file),
            tag: tag.clone(),
            basic_content_only: self.basic_content_only,
            rate_limit: self.chat_rate_limit,
        })
    }
}

impl Setup {
    /// Changes the configuration and writes both files again.
    pub fn edit(&mut self, change: impl FnOnce(&mut Config)) {
        change(&mut self.files);
        self.files.write(self.dir.path());
    }

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
