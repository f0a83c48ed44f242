//! Configuration: a Butler production file loads unchanged; every missing or invalid key is
//! reported with its own path; secrets come from the environment and never show in output.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use consumer::check::{EXIT_CONFIG_INVALID, EXIT_OK, check_config_with_env};
use consumer::config::{self, ConfigErrors, ConsumerConfig, SecretSource};
use consumer::sinks::chat::MessageType;
use consumer::sinks::email::EmailAlert;
use consumer::sinks::log::LogDestination;
use consumer::sinks::mqtt::MqttDestination;
use consumer::sinks::script_log_disk::ScriptLogDiskConfig;
use consumer::sinks::slack::SlackAlert;
use consumer::sinks::teams::TeamsAlert;
use consumer::sinks::webhook::WebhookDestination;
use qlik_events::MqttVersion;
use secrecy::ExposeSecret;
use serde_yaml_ng::{Mapping, Value};

const TENANT_ID: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
const DEV_TENANT_ID: &str = "Dev7Tenant0000000000000000000001";
const FILE_JWT: &str =
    "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJGSUxFLVRPS0VOIn0.c2lnbmF0dXJlLWZyb20tZmlsZQ";
const ENV_JWT: &str = "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJFTlYtVE9LRU4ifQ.ZW52LXNpZ25hdHVyZS1zZWNyZXQ";
const DEV_JWT: &str = "eyJhbGciOiJFUzM4NCJ9.eyJzdWIiOiJERVYtVE9LRU4ifQ.ZGV2LXNpZ25hdHVyZS1zZWNyZXQ";
const FILE_PASSWORD: &str = "broker-pass-IN-FILE-42";
const ENV_PASSWORD: &str = "broker-pass-FROM-ENV-77";
const SMTP_FILE_PASSWORD: &str = "smtp-pass-IN-FILE-31";
const SMTP_ENV_PASSWORD: &str = "smtp-pass-FROM-ENV-58";
const T: &str = "Butler.qlikSenseCloud.event.mqtt.tenant";
const F: &str = "Butler.mqttConfig.qlikSenseCloud.event.mqttForward";

/// Strings that must never appear in any output.
const SECRETS: &[&str] = &[
    FILE_JWT,
    ENV_JWT,
    DEV_JWT,
    FILE_PASSWORD,
    ENV_PASSWORD,
    SMTP_FILE_PASSWORD,
    SMTP_ENV_PASSWORD,
    "TEAMS-SECRET-PATH",
    "SLACK-SECRET-PATH",
    "WEBHOOK-SECRET-TOKEN",
    "HEADER-SECRET-VALUE",
];

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("failed-reload-qscloud-workflow.handlebars"),
            "{\"text\": \"{{appName}}\"}",
        )
        .expect("template");
        // Butler's htmlTemplateFile names the file without its `.handlebars`.
        std::fs::write(
            dir.path().join("failed-reload-qscloud.handlebars"),
            "<p>{{appName}}</p>",
        )
        .expect("email template");
        // A real certificate: check-config builds the destinations, which parses the CA file.
        let ca = rcgen::generate_simple_self_signed(vec!["broker.example.com".to_owned()])
            .expect("test CA");
        std::fs::write(dir.path().join("ca.pem"), ca.cert.pem()).expect("ca");
        Self { dir }
    }

    fn data(&self, name: &str) -> Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data")
            .join(name);
        let text = std::fs::read_to_string(path)
            .expect("test data")
            .replace("TEMPLATE_DIR", &self.dir.path().display().to_string())
            .replace(
                "CA_FILE",
                &self.dir.path().join("ca.pem").display().to_string(),
            );
        serde_yaml_ng::from_str(&text).expect("test data is YAML")
    }

    fn butler(&self) -> Value {
        self.data("butler-production.yaml")
    }

    fn extensions(&self) -> Value {
        self.data("consumer-extensions.yaml")
    }

    fn write(&self, name: &str, value: &Value) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, serde_yaml_ng::to_string(value).expect("yaml")).expect("write");
        path
    }

    fn load(
        &self,
        butler: &Value,
        ext: Option<&Value>,
        env: &[(&str, &str)],
    ) -> Result<ConsumerConfig, ConfigErrors> {
        let (main, ext, env) = self.files(butler, ext, env);
        config::load_with_env(&main, ext.as_deref(), &|name| env.get(name).cloned())
    }

    /// Writes the Butler file (and the extension file, if any); the environment as a map.
    fn files(
        &self,
        butler: &Value,
        ext: Option<&Value>,
        env: &[(&str, &str)],
    ) -> (PathBuf, Option<PathBuf>, HashMap<String, String>) {
        let main = self.write("butler.yaml", butler);
        let ext = ext.map(|e| self.write("consumer.yaml", e));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        (main, ext, env)
    }

    fn check(&self, butler: &Value, ext: Option<&Value>, env: &[(&str, &str)]) -> (i32, String) {
        let (main, ext, env) = self.files(butler, ext, env);
        let mut out = Vec::new();
        let code = check_config_with_env(
            &main,
            ext.as_deref(),
            &|name| env.get(name).cloned(),
            &mut out,
        );
        (code, String::from_utf8(out).expect("utf-8"))
    }
}

fn key(k: &str) -> Value {
    Value::String(k.to_owned())
}

/// `Butler.a.b` → the mapping entry, creating mappings on the way.
fn entry<'a>(doc: &'a mut Value, dotted: &str) -> &'a mut Value {
    dotted.split('.').fold(doc, |node, k| {
        if !node.is_mapping() {
            *node = Value::Mapping(Mapping::new());
        }
        let map = node.as_mapping_mut().expect("mapping");
        if !map.contains_key(k) {
            map.insert(key(k), Value::Null);
        }
        map.get_mut(k).expect("just inserted")
    })
}

fn set(doc: &mut Value, dotted: &str, value: Value) {
    *entry(doc, dotted) = value;
}

fn remove(doc: &mut Value, dotted: &str) {
    let (parent, last) = dotted.rsplit_once('.').expect("dotted path");
    let map = entry(doc, parent).as_mapping_mut().expect("parent mapping");
    assert!(map.remove(last).is_some(), "{dotted} was not in the file");
}

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn b(v: bool) -> Value {
    Value::Bool(v)
}

fn assert_no_secrets(text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "a secret leaked into output (marker {})",
            &secret[..secret.len().min(12)]
        );
    }
}

fn problems(result: Result<ConsumerConfig, ConfigErrors>) -> ConfigErrors {
    match result {
        Ok(_) => panic!("configuration unexpectedly valid"),
        Err(e) => e,
    }
}

#[test]
fn butler_production_file_loads_unchanged() {
    let fx = Fixture::new();
    let config = fx.load(&fx.butler(), None, &[]).expect("valid");

    // `Butler.qlikSenseCloud.enable` is true: loading refuses a config where it is false.
    assert_eq!(config.tenants.len(), 1);
    let t = &config.tenants[0];
    assert_eq!(t.id, TENANT_ID);
    assert_eq!(t.tenant_url_str(), "https://acme.eu.qlikcloud.com");
    assert_eq!(t.jwt.expose_secret(), FILE_JWT);
    assert_eq!(
        t.jwt_source,
        SecretSource::File(format!("{T}.auth.jwt.token"))
    );
    assert_eq!(
        t.qmc_url.as_deref(),
        Some("https://acme.eu.qlikcloud.com/console")
    );
    assert_eq!(
        t.hub_url.as_deref(),
        Some("https://acme.eu.qlikcloud.com/hub")
    );
    assert_eq!(t.comment.as_deref(), Some("Production tenant, EU region"));
    assert_eq!(t.key_path, T);

    let teams = t.alert.get::<TeamsAlert>().expect("teams enabled");
    assert_eq!(teams.message_type, MessageType::Formatted);
    assert_eq!(teams.rate_limit, Duration::from_secs(15));
    assert_eq!(teams.head_script_log_lines, 15);
    assert_eq!(
        teams.webhook_url.expose().as_str(),
        "https://acme.webhook.office.com/webhookb2/TEAMS-SECRET-PATH"
    );
    assert!(!teams.alert_enable_by_tag.enable);
    let slack = t.alert.get::<SlackAlert>().expect("slack enabled");
    assert_eq!(slack.message_type, MessageType::Basic);
    assert_eq!(slack.format.channel.as_deref(), Some("sense-task-failure"));
    assert_eq!(slack.format.from_user.as_deref(), Some("Qlik Sense"));
    assert_eq!(slack.format.icon_emoji.as_deref(), Some(":ghost:"));
    assert_eq!(slack.tail_script_log_lines, 20);
    assert!(slack.alert_enable_by_tag.enable);
    assert!(
        slack
            .alert_enable_by_tag
            .allows(&["Butler - Send Slack alert if app reload fails".to_owned()])
    );
    assert!(!slack.alert_enable_by_tag.allows(&["other".to_owned()]));
    let email = t.alert.get::<EmailAlert>().expect("email enabled");
    assert_eq!(
        email.recipients,
        ["emma@somecompany.com", "patrick@somecompany.com"]
    );
    assert!(email.app_owner_alert.enable);
    assert_eq!(email.app_owner_alert.include, ["anna@somecompany.com"]);
    assert_eq!(email.app_owner_alert.exclude, ["daniel@somecompany.com"]);
    assert_eq!(email.tail_script_log_lines, 25);

    let b = &config.broker;
    assert_eq!((b.host.as_str(), b.port), ("mqttbroker.company.com", 8765));
    assert_eq!(b.username.as_deref(), Some("butler"));
    assert_eq!(
        b.password.as_ref().map(|p| p.expose_secret()),
        Some(FILE_PASSWORD)
    );
    // Butler always uses TLS; the defaults keep what Butler does and give a persistent session.
    assert!(b.tls);
    assert_eq!(b.version, MqttVersion::V311);
    assert!(!b.clean_session);
    assert!(b.client_id.starts_with("qscloud-consumer"));
    assert_eq!(config.topics.subscription_filter(), "qscloud/#");
    assert_eq!(config.topics.app_reload, "qscloud/app/reload");
    assert!(config.topics.is_app_reload_topic("qscloud/app/reload/Xq7v"));
    assert!(!config.topics.is_app_reload_topic("qscloud/app/reloaded"));
    assert_eq!(
        config
            .destinations
            .get::<ScriptLogDiskConfig>()
            .map(|d| d.log_directory.as_path()),
        Some(Path::new("/var/log/butler/scriptlogs/qscloud"))
    );
    assert_eq!(config.generic_urls.len(), 2);
    assert_eq!(config.consumer.state_dir, Path::new(".state"));
    assert_eq!(
        config.consumer.dead_letter_dir,
        Path::new(".state/dead-letter")
    );
    assert!(config.destinations.get::<LogDestination>().is_some());
    assert!(config.destinations.get::<WebhookDestination>().is_none());
    assert!(config.destinations.get::<MqttDestination>().is_none());

    let settings = b.broker_settings();
    assert_eq!(
        settings.display_url(),
        "mqtts://butler@mqttbroker.company.com:8765"
    );
}

#[test]
fn extension_file_adds_tenants_broker_settings_and_destinations() {
    let fx = Fixture::new();
    let dev_var = config::tenant_jwt_env_var(DEV_TENANT_ID);
    assert_eq!(dev_var, "QLIK_TENANT_JWT_DEV7TENANT0000000000000000000001");
    let config = fx
        .load(
            &fx.butler(),
            Some(&fx.extensions()),
            &[(dev_var.as_str(), DEV_JWT)],
        )
        .expect("valid");

    let ids: Vec<&str> = config.tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, [TENANT_ID, DEV_TENANT_ID]);
    let dev = config.tenant(DEV_TENANT_ID).expect("dev tenant");
    // Plain http is fine on loopback.
    assert_eq!(dev.tenant_url_str(), "http://127.0.0.1:9999");
    assert_eq!(dev.jwt.expose_secret(), DEV_JWT);
    assert_eq!(dev.jwt_source, SecretSource::Env(dev_var.clone()));
    assert_eq!(dev.key_path, "Butler.qlikSenseCloud.event.mqtt.tenants[0]");
    assert!(dev.alert.get::<TeamsAlert>().is_none());

    let b = &config.broker;
    assert_eq!(b.client_id, "qscloud-consumer-prod-1");
    assert_eq!(b.version, MqttVersion::V5);
    assert_eq!(b.session_expiry_v5(), Some(Duration::from_secs(86400)));
    assert_eq!(
        b.ca_file.as_deref(),
        Some(fx.dir.path().join("ca.pem").as_path())
    );
    assert_eq!(
        config.topics.subscription_filter(),
        "$share/butler-consumers/qscloud/#"
    );
    assert_eq!(
        config.consumer.state_dir,
        Path::new("/var/lib/qscloud-consumer")
    );
    assert_eq!(
        config.consumer.dead_letter_dir,
        Path::new("/var/lib/qscloud-consumer/dead-letter")
    );
    assert_eq!(config.consumer.retry.max_attempts, 4);
    assert_eq!(
        config.consumer.retry.initial_backoff,
        Duration::from_millis(200)
    );
    assert_eq!(
        config.consumer.enrichment.request_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(config.consumer.enrichment.max_retries, 2);
    let hook = config
        .destinations
        .get::<WebhookDestination>()
        .expect("webhook destination");
    assert_eq!(hook.name, "ops-portal");
    assert_eq!(hook.headers[0].0, "Authorization");
    assert_eq!(
        hook.headers[0].1.expose_secret(),
        "Bearer HEADER-SECRET-VALUE"
    );
    let mqtt = config
        .destinations
        .get::<MqttDestination>()
        .expect("mqtt destination");
    assert_eq!(mqtt.topic, "qscloud-alerts/prod/{tenantId}/{appId}");
    assert_eq!(config.sources.len(), 2);
}

#[test]
fn extension_keys_are_accepted_in_the_main_file() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    set(&mut butler, &format!("{F}.broker.tls"), b(false));
    set(&mut butler, &format!("{F}.broker.allowPlaintext"), b(true));
    set(&mut butler, &format!("{F}.broker.clientId"), s("one-file"));
    set(
        &mut butler,
        "Butler.qlikSenseCloud.consumer.stateDirectory",
        s("/tmp/state"),
    );
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert!(!config.broker.tls);
    assert_eq!(config.broker.client_id, "one-file");
    assert_eq!(config.consumer.state_dir, Path::new("/tmp/state"));
    assert_eq!(
        config.broker.broker_settings().display_url(),
        "mqtt://butler@mqttbroker.company.com:8765"
    );
}

#[test]
fn the_extension_file_can_switch_on_what_butler_keeps_off() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    set(&mut butler, "Butler.qlikSenseCloud.enable", b(false));
    let err = problems(fx.load(&butler, None, &[]));
    assert!(err.has("Butler.qlikSenseCloud.enable"), "{err}");
    let mut ext = Value::Mapping(Mapping::new());
    set(&mut ext, "Butler.qlikSenseCloud.enable", b(true));
    fx.load(&butler, Some(&ext), &[]).expect("extension wins");
}

/// Each required key, removed on its own, is reported at exactly its path.
#[test]
fn every_missing_key_gets_its_own_message() {
    let fx = Fixture::new();
    let teams = format!("{T}.alert.teamsNotification.reloadAppFailure");
    let slack = format!("{T}.alert.slackNotification.reloadAppFailure");
    let email = format!("{T}.alert.emailNotification.reloadAppFailure");
    let cases = [
        "Butler.qlikSenseCloud.enable".to_owned(),
        format!("{T}.id"),
        format!("{T}.tenantUrl"),
        format!("{T}.authType"),
        format!("{T}.auth.jwt.token"),
        format!("{F}.enable"),
        format!("{F}.broker.host"),
        format!("{F}.broker.port"),
        format!("{F}.topic.subscriptionRoot"),
        format!("{F}.topic.appReload"),
        format!("{teams}.webhookURL"),
        format!("{teams}.messageType"),
        format!("{teams}.templateFile"),
        format!("{slack}.webhookURL"),
        format!("{slack}.basicMsgTemplate"),
        format!("{email}.subject"),
        format!("{email}.fromAddress"),
        "Butler.scriptLog.storeOnDisk.qsCloud.appReloadFailure.logDirectory".to_owned(),
    ];
    for path in &cases {
        let mut butler = fx.butler();
        remove(&mut butler, path);
        let err = problems(fx.load(&butler, None, &[]));
        let message = err
            .message_for(path)
            .unwrap_or_else(|| panic!("no problem reported at {path}: {err}"));
        assert!(message.starts_with("missing"), "{path}: {message}");
        assert_eq!(err.problems.len(), 1, "only {path} should fail: {err}");
    }
}

#[test]
fn whole_sections_missing_are_named() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    remove(&mut butler, "Butler.qlikSenseCloud");
    remove(&mut butler, F);
    let err = problems(fx.load(&butler, None, &[]));
    assert_eq!(err.message_for("Butler.qlikSenseCloud"), Some("missing"));
    assert_eq!(err.message_for(F), Some("missing"));
    assert!(err.has(T), "{err}");

    let not_butler = fx.write(
        "other.yaml",
        &serde_yaml_ng::from_str("foo: 1").expect("yaml"),
    );
    let err = problems(config::load_with_env(&not_butler, None, &|_| None));
    assert_eq!(
        err.message_for("Butler"),
        Some("missing (is this a Butler config file?)")
    );
}

#[test]
fn invalid_values_are_all_reported_with_their_paths() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    let teams = format!("{T}.alert.teamsNotification.reloadAppFailure");
    set(
        &mut butler,
        &format!("{T}.tenantUrl"),
        s("acme.eu.qlikcloud.com"),
    );
    set(&mut butler, &format!("{T}.authType"), s("oauth"));
    set(&mut butler, &format!("{T}.qlikSenseUrls.qmc"), s("nope"));
    set(&mut butler, &format!("{F}.broker.port"), s("eighty"));
    set(&mut butler, &format!("{F}.broker.tls"), s("sometimes"));
    set(
        &mut butler,
        &format!("{F}.topic.subscriptionRoot"),
        s("qscloud/#/x"),
    );
    set(&mut butler, &format!("{teams}.messageType"), s("fancy"));
    set(&mut butler, &format!("{teams}.rateLimit"), s("-5"));
    set(
        &mut butler,
        &format!("{teams}.webhookURL"),
        s("http://acme.webhook.office.com/TEAMS-SECRET-PATH"),
    );
    let err = problems(fx.load(&butler, None, &[]));
    let want = [
        (
            format!("{T}.tenantUrl"),
            "not a URL (got `acme.eu.qlikcloud.com`)",
        ),
        (format!("{T}.authType"), "must be `jwt` (got `oauth`)"),
        (format!("{T}.qlikSenseUrls.qmc"), "not a URL (got `nope`)"),
        (
            format!("{F}.broker.port"),
            "must be a whole number from 1 to 65535",
        ),
        (format!("{F}.broker.tls"), "must be true or false"),
        (
            format!("{F}.topic.subscriptionRoot"),
            "`#` may only be a whole last level, as in `qscloud/#`",
        ),
        (
            format!("{teams}.messageType"),
            "must be `basic` or `formatted` (got `fancy`)",
        ),
        (
            format!("{teams}.rateLimit"),
            "must be a whole number from 0 to 604800",
        ),
        (
            format!("{teams}.webhookURL"),
            "plain http:// is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost): use https://",
        ),
    ];
    for (path, message) in &want {
        assert_eq!(err.message_for(path), Some(*message), "{path}\n{err}");
    }
    assert_eq!(err.problems.len(), want.len(), "{err}");
    // The Display form is one `path: message` per line.
    let text = err.to_string();
    assert!(text.contains(&format!(
        "{T}.tenantUrl: not a URL (got `acme.eu.qlikcloud.com`)"
    )));
    assert_no_secrets(&text);
}

#[test]
fn plain_http_is_only_for_loopback() {
    let fx = Fixture::new();
    for (url, ok) in [
        ("http://127.0.0.1:8080", true),
        ("http://localhost:8080", true),
        ("http://[::1]:8080", true),
        ("http://acme.eu.qlikcloud.com", false),
        ("http://192.168.1.10", false),
        ("https://acme.eu.qlikcloud.com", true),
    ] {
        let mut butler = fx.butler();
        set(&mut butler, &format!("{T}.tenantUrl"), s(url));
        let result = fx.load(&butler, None, &[]);
        assert_eq!(result.is_ok(), ok, "{url}");
        if !ok {
            let err = problems(result);
            assert!(
                err.message_for(&format!("{T}.tenantUrl"))
                    .is_some_and(|m| m.starts_with("plain http:// is accepted only for loopback")),
                "{err}"
            );
        }
    }

    let mut ext = fx.extensions();
    set(
        &mut ext,
        "Butler.qlikSenseCloud.consumer.destinations.webhook",
        serde_yaml_ng::from_str("[{name: a, url: 'http://10.1.1.1/hook'}]").expect("yaml"),
    );
    let err = problems(fx.load(&fx.butler(), Some(&ext), &[("QLIK_TENANT_JWT", ENV_JWT)]));
    assert!(
        err.has("Butler.qlikSenseCloud.consumer.destinations.webhook[0].url"),
        "{err}"
    );

    // A header value that no HTTP request can carry is refused at load, without quoting it.
    set(
        &mut ext,
        "Butler.qlikSenseCloud.consumer.destinations.webhook",
        serde_yaml_ng::from_str(
            "[{name: a, url: 'https://h.example/', headers: [{name: X-Token, value: \"SECRET-1\\r\\nX-Evil: 1\"}]}]",
        )
        .expect("yaml"),
    );
    let err = problems(fx.load(&fx.butler(), Some(&ext), &[("QLIK_TENANT_JWT", ENV_JWT)]));
    let key = "Butler.qlikSenseCloud.consumer.destinations.webhook[0].headers[0].value";
    assert!(err.has(key), "{err}");
    assert!(!err.to_string().contains("SECRET-1"), "{err}");
}

#[test]
fn secrets_come_from_the_environment() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    // Butler's template placeholders stay in the file; the environment supplies the values.
    set(
        &mut butler,
        &format!("{T}.auth.jwt.token"),
        s("<JWT token>"),
    );
    set(
        &mut butler,
        &format!("{F}.broker.password"),
        s("<password>"),
    );

    let err = problems(fx.load(&butler, None, &[]));
    let jwt_msg = err
        .message_for(&format!("{T}.auth.jwt.token"))
        .expect("jwt problem");
    assert!(jwt_msg.contains("placeholder"), "{jwt_msg}");
    assert!(jwt_msg.contains("QLIK_TENANT_JWT_XQ7VR2MK9PLS4TNB8WYC1ZDE5FGH3JKQ"));
    assert!(
        err.message_for(&format!("{F}.broker.password"))
            .is_some_and(|m| m.contains("MQTT_PASSWORD")),
        "{err}"
    );

    let config = fx
        .load(
            &butler,
            None,
            &[
                ("QLIK_TENANT_JWT", ENV_JWT),
                ("MQTT_PASSWORD", ENV_PASSWORD),
            ],
        )
        .expect("valid with env");
    assert_eq!(config.tenants[0].jwt.expose_secret(), ENV_JWT);
    assert_eq!(
        config.tenants[0].jwt_source,
        SecretSource::Env("QLIK_TENANT_JWT".to_owned())
    );
    assert_eq!(
        config.broker.password.as_ref().map(|p| p.expose_secret()),
        Some(ENV_PASSWORD)
    );
    assert_eq!(
        config.broker.password_source,
        SecretSource::Env("MQTT_PASSWORD".to_owned())
    );

    // The per-tenant variable beats the shared one, and the environment beats the file.
    let per_tenant = config::tenant_jwt_env_var(TENANT_ID);
    let config = fx
        .load(
            &fx.butler(),
            None,
            &[(per_tenant.as_str(), DEV_JWT), ("QLIK_TENANT_JWT", ENV_JWT)],
        )
        .expect("valid");
    assert_eq!(config.tenants[0].jwt.expose_secret(), DEV_JWT);

    // An empty variable counts as unset.
    let config = fx
        .load(&fx.butler(), None, &[("QLIK_TENANT_JWT", "  ")])
        .expect("valid");
    assert_eq!(config.tenants[0].jwt.expose_secret(), FILE_JWT);
}

#[test]
fn a_malformed_token_is_reported_without_quoting_it() {
    let fx = Fixture::new();
    let err = problems(fx.load(
        &fx.butler(),
        None,
        &[("QLIK_TENANT_JWT", "HEADER-SECRET-VALUE not a jwt")],
    ));
    assert_eq!(
        err.message_for(&format!("{T}.auth.jwt.token")),
        Some(
            "is not a JWT (from $QLIK_TENANT_JWT): expected three base64url parts separated by dots"
        )
    );
    assert_no_secrets(&err.to_string());
    assert_no_secrets(&format!("{err:?}"));
}

#[test]
fn secrets_are_masked_in_debug_and_summary() {
    let fx = Fixture::new();
    let dev_var = config::tenant_jwt_env_var(DEV_TENANT_ID);
    let env = [(dev_var.as_str(), DEV_JWT)];
    let config = fx
        .load(&fx.butler(), Some(&fx.extensions()), &env)
        .expect("valid");
    assert_no_secrets(&format!("{config:?}"));
    assert_no_secrets(&format!("{config:#?}"));

    let (code, out) = fx.check(&fx.butler(), Some(&fx.extensions()), &env);
    assert_eq!(code, EXIT_OK, "{out}");
    assert_no_secrets(&out);
    assert!(
        out.contains(TENANT_ID) && out.contains(DEV_TENANT_ID),
        "{out}"
    );
    assert!(
        out.contains(&format!("JWT: *** from environment (${dev_var})")),
        "{out}"
    );
    assert!(
        out.contains(&format!("JWT: *** from file ({T}.auth.jwt.token)")),
        "{out}"
    );
    assert!(
        out.contains("Broker: mqtts://butler@mqttbroker.company.com:8765"),
        "{out}"
    );
    assert!(out.contains("password: *** from file"), "{out}");
    assert!(out.contains("$share/butler-consumers/qscloud/#"), "{out}");
    assert!(
        out.contains(
            "Teams (Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ) → https://acme.webhook.office.com/***"
        ),
        "{out}"
    );
    assert!(
        out.contains("Slack (Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ) → https://hooks.slack.com/***"),
        "{out}"
    );
    assert!(
        out.contains(
            "webhook \"ops-portal\" → https://ops.example.com/*** (headers Authorization: ***)"
        ),
        "{out}"
    );
    assert!(
        out.contains("MQTT re-publish to qscloud-alerts/prod/{tenantId}/{appId}"),
        "{out}"
    );
    assert!(
        out.contains("script log to disk under /var/log/butler/scriptlogs/qscloud"),
        "{out}"
    );
    assert!(out.ends_with("Configuration OK\n"), "{out}");
}

#[test]
fn check_config_fails_with_every_problem_and_a_distinct_exit_code() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    set(&mut butler, &format!("{T}.tenantUrl"), s("not a url"));
    remove(&mut butler, &format!("{F}.broker.host"));
    let (code, out) = fx.check(&butler, None, &[]);
    assert_eq!(code, EXIT_CONFIG_INVALID);
    assert_ne!(code, 0);
    assert!(out.starts_with("Configuration has 2 problems:"), "{out}");
    assert!(
        out.contains(&format!("  {T}.tenantUrl: not a URL")),
        "{out}"
    );
    assert!(
        out.contains(&format!("  {F}.broker.host: missing")),
        "{out}"
    );
    assert!(out.ends_with("Configuration NOT OK\n"), "{out}");
    assert_no_secrets(&out);
}

#[test]
fn unreadable_and_malformed_files_name_the_file() {
    let fx = Fixture::new();
    let missing = fx.dir.path().join("nope.yaml");
    let err = problems(config::load_with_env(&missing, None, &|_| None));
    assert_eq!(err.problems[0].path, missing.display().to_string());
    assert!(err.problems[0].message.starts_with("cannot read"));

    let bad = fx.dir.path().join("bad.yaml");
    std::fs::write(&bad, "Butler:\n  a: [1,\n  b: : :\n").expect("write");
    let err = problems(config::load_with_env(&bad, None, &|_| None));
    assert_eq!(err.problems[0].path, bad.display().to_string());
    assert!(
        err.problems[0].message.starts_with("not valid YAML"),
        "{err}"
    );
}

#[test]
fn disabled_blocks_may_hold_anything_as_in_butler() {
    let fx = Fixture::new();
    let mut butler = fx.butler();
    let teams = format!("{T}.alert.teamsNotification.reloadAppFailure");
    set(&mut butler, &format!("{teams}.enable"), b(false));
    set(&mut butler, &format!("{teams}.webhookURL"), s("<not set>"));
    set(&mut butler, &format!("{teams}.messageType"), s("whatever"));
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert!(config.tenants[0].alert.get::<TeamsAlert>().is_none());
}

#[test]
fn mqtt_specific_rules() {
    let fx = Fixture::new();
    // Shared subscriptions need MQTT 5.
    let mut butler = fx.butler();
    set(
        &mut butler,
        &format!("{F}.broker.sharedSubscriptionGroup"),
        s("g1"),
    );
    let err = problems(fx.load(&butler, None, &[]));
    assert!(
        err.has(&format!("{F}.broker.sharedSubscriptionGroup")),
        "{err}"
    );

    // A subscription that never receives the app reload topic is useless.
    let mut butler = fx.butler();
    set(
        &mut butler,
        &format!("{F}.topic.subscriptionRoot"),
        s("other/#"),
    );
    let err = problems(fx.load(&butler, None, &[]));
    assert!(
        err.message_for(&format!("{F}.topic.appReload"))
            .is_some_and(|m| m.contains("is not covered by subscriptionRoot")),
        "{err}"
    );

    // `+` wildcards are understood.
    let mut butler = fx.butler();
    set(
        &mut butler,
        &format!("{F}.topic.subscriptionRoot"),
        s("qscloud/+/reload/+"),
    );
    fx.load(&butler, None, &[])
        .expect("+ filter covers the app reload topic");

    // A password needs a username.
    let mut butler = fx.butler();
    remove(&mut butler, &format!("{F}.broker.username"));
    let err = problems(fx.load(&butler, None, &[]));
    assert!(err.has(&format!("{F}.broker.username")), "{err}");
    assert_no_secrets(&err.to_string());

    // A clean session is possible but must be asked for.
    let mut butler = fx.butler();
    set(&mut butler, &format!("{F}.broker.cleanSession"), b(true));
    set(&mut butler, &format!("{F}.broker.mqttVersion"), s("5"));
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert_eq!(config.broker.session_expiry_v5(), None);

    // A missing CA file is caught before connecting.
    let mut butler = fx.butler();
    set(
        &mut butler,
        &format!("{F}.broker.caFile"),
        s("/nonexistent/ca.pem"),
    );
    let err = problems(fx.load(&butler, None, &[]));
    assert_eq!(
        err.message_for(&format!("{F}.broker.caFile")),
        Some("file `/nonexistent/ca.pem` does not exist")
    );
}

#[test]
fn credentials_over_plain_tcp_need_loopback_or_allow_plaintext() {
    let fx = Fixture::new();
    let tls = format!("{F}.broker.tls");
    let allow = format!("{F}.broker.allowPlaintext");
    // tls: false with a user and password to mqttbroker.company.com: refused, naming the key
    // and the way out, never the password.
    let mut butler = fx.butler();
    set(&mut butler, &tls, b(false));
    let (code, out) = fx.check(&butler, None, &[]);
    assert_eq!(code, EXIT_CONFIG_INVALID, "{out}");
    assert!(
        out.contains(&format!(
            "  {tls}: is false while a username or password is set for mqttbroker.company.com"
        )) && out.contains(&format!("{allow}: true")),
        "{out}"
    );
    assert_no_secrets(&out);
    // The password from the environment counts the same.
    let mut anonymous_in_file = butler.clone();
    remove(&mut anonymous_in_file, &format!("{F}.broker.password"));
    let err = problems(fx.load(&anonymous_in_file, None, &[("MQTT_PASSWORD", ENV_PASSWORD)]));
    assert!(err.has(&tls), "{err}");

    // An explicit yes accepts it, and the summary says what it costs.
    set(&mut butler, &allow, b(true));
    let (code, out) = fx.check(&butler, None, &[]);
    assert_eq!(code, EXIT_OK, "{out}");
    assert!(
        out.contains("allowPlaintext: the password crosses the network unencrypted"),
        "{out}"
    );
    assert!(
        fx.load(&butler, None, &[])
            .expect("valid")
            .broker
            .allow_plaintext
    );

    // Nothing crosses the network to a loopback broker, and nothing secret goes anonymously.
    for host in ["127.0.0.1", "localhost", "::1"] {
        let mut butler = fx.butler();
        set(&mut butler, &tls, b(false));
        set(&mut butler, &format!("{F}.broker.host"), s(host));
        fx.load(&butler, None, &[])
            .unwrap_or_else(|e| panic!("{host}: {e}"));
    }
    let mut butler = fx.butler();
    set(&mut butler, &tls, b(false));
    remove(&mut butler, &format!("{F}.broker.username"));
    remove(&mut butler, &format!("{F}.broker.password"));
    let config = fx
        .load(&butler, None, &[])
        .expect("anonymous plain TCP is valid");
    assert!(!config.broker.allow_plaintext);
    // Not a boolean: named like every other key.
    let mut butler = fx.butler();
    set(&mut butler, &allow, s("perhaps"));
    let err = problems(fx.load(&butler, None, &[]));
    assert_eq!(err.message_for(&allow), Some("must be true or false"));
}

/// The development tenant's JWT, which the extension fixture leaves to the environment.
const DEV_ENV: &[(&str, &str)] = &[("QLIK_TENANT_JWT_DEV7TENANT0000000000000000000001", DEV_JWT)];

/// The warnings in `check-config`'s output (the lines under `Warnings (n):`).
fn warnings(out: &str) -> Vec<&str> {
    out.lines()
        .skip_while(|l| !l.starts_with("Warnings ("))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .map(str::trim)
        .collect()
}

#[test]
fn check_config_warns_about_what_contradicts_itself() {
    let fx = Fixture::new();
    let c = "Butler.qlikSenseCloud.consumer";
    let subject = format!("{T}.alert.emailNotification.reloadAppFailure.subject");
    // The fixture as it is: a fixed client id, and a re-publish topic inside the shipped ACL;
    // only the email subject Butler's template ships asks for a field of its client-managed
    // alerts.
    let (code, out) = fx.check(&fx.butler(), Some(&fx.extensions()), DEV_ENV);
    assert_eq!(code, EXIT_OK, "{out}");
    assert_eq!(warnings(&out).len(), 1, "{out}");
    assert!(
        warnings(&out)[0].starts_with(&format!(
            "{subject}: the template uses `{{{{taskName}}}}`, which the alert context never carries"
        )),
        "{out}"
    );
    assert!(out.ends_with("Configuration OK\n"), "{out}");

    let mut butler = fx.butler();
    set(&mut butler, &subject, s("Reload of {{appName}} failed"));
    let mut ext = fx.extensions();
    // Outside the ACL's `topic write qscloud-alerts/#`: named with the ACL line.
    set(
        &mut ext,
        &format!("{c}.destinations.mqtt.topic"),
        s("butler/alerts/{tenantId}/{appId}"),
    );
    // A template with a field the context never carries, beside ones it has (helpers, `this`,
    // `@index`, a block's own scope): only the stranger is named, with the file.
    let template = fx.dir.path().join("teams-custom.handlebars");
    std::fs::write(
        &template,
        r#"{"text": "{{appName}} {{appOwnerMail}} {{#each genericUrls}}{{@index}} {{this.url}} {{linkText}}{{/each}} {{#if (eq status "error")}}{{code scriptLogTail}}{{/if}}"}"#,
    )
    .expect("template");
    let teams = format!("{T}.alert.teamsNotification.reloadAppFailure");
    set(
        &mut butler,
        &format!("{teams}.templateFile"),
        s(&template.display().to_string()),
    );
    // A digest template sees the digest's fields, not an alert's.
    let digest = fx.dir.path().join("teams-digest.handlebars");
    std::fs::write(
        &digest,
        r#"{"text": "{{total}} failed: {{#each alerts}}{{appName}} {{errorLine}} {{../tenantId}}{{/each}} {{appName}}"}"#,
    )
    .expect("digest template");
    set(
        &mut butler,
        &format!("{teams}.digestTemplateFile"),
        s(&digest.display().to_string()),
    );
    // No clientId: the session hangs on the host name.
    remove(&mut ext, &format!("{F}.broker.clientId"));
    let (code, out) = fx.check(&butler, Some(&ext), &[DEV_ENV[0], ("HOSTNAME", "c0ffee42")]);
    assert_eq!(code, EXIT_OK, "warnings do not fail the check: {out}");
    let found = warnings(&out);
    assert_eq!(found.len(), 4, "{out}");
    assert!(
        found[0].starts_with(&format!(
            "{F}.broker.clientId: not set, so it is `qscloud-consumer-c0ffee42`"
        )) && found[0].contains("every event published while the consumer is down")
            && found[0].ends_with("Set a fixed clientId"),
        "{}",
        found[0]
    );
    assert!(
        found[1].starts_with(&format!(
            "{c}.destinations.mqtt.topic: `butler/alerts/{{tenantId}}/{{appId}}` is outside"
        )) && found[1].contains("infra/mosquitto/acl: `topic write qscloud-alerts/#`"),
        "{}",
        found[1]
    );
    assert_eq!(
        found[2],
        format!(
            "{teams}.templateFile: template file {} uses `{{{{appOwnerMail}}}}`, which the alert \
             context never carries: it renders as empty text (the fields are listed in \
             docs/configuration.md, \"Alert template fields\")",
            template.display()
        )
    );
    assert!(
        found[3].starts_with(&format!("{teams}.digestTemplateFile: template file {} uses `{{{{appName}}}}`, which the digest context never carries", digest.display())),
        "{}",
        found[3]
    );
    assert_no_secrets(&out);

    // An empty clientId is no client id either: the same host-derived default, the same warning.
    set(&mut ext, &format!("{F}.broker.clientId"), s(""));
    let (code, out) = fx.check(&butler, Some(&ext), &[DEV_ENV[0], ("HOSTNAME", "c0ffee42")]);
    assert_eq!(code, EXIT_OK, "{out}");
    assert!(
        warnings(&out)[0].starts_with(&format!(
            "{F}.broker.clientId: not set, so it is `qscloud-consumer-c0ffee42`"
        )),
        "{out}"
    );

    // Each fixed: no warning at all.
    set(
        &mut ext,
        &format!("{c}.destinations.mqtt.topic"),
        s("qscloud-alerts/{tenantId}/{appId}"),
    );
    set(
        &mut ext,
        &format!("{F}.broker.clientId"),
        s("qscloud-consumer-prod-1"),
    );
    std::fs::write(&template, r#"{"text": "{{appName}} {{appOwnerEmail}}"}"#).expect("template");
    std::fs::write(
        &digest,
        r#"{"text": "{{#each alerts}}{{appName}}{{/each}}"}"#,
    )
    .expect("digest");
    let (code, out) = fx.check(&butler, Some(&ext), DEV_ENV);
    assert_eq!(code, EXIT_OK, "{out}");
    assert!(!out.contains("Warnings"), "{out}");
}

#[test]
fn a_shared_subscription_needs_a_shared_store() {
    let fx = Fixture::new();
    let group = format!("{F}.broker.sharedSubscriptionGroup");
    let store = "Butler.qlikSenseCloud.consumer.stateStore";
    let mut ext = fx.extensions();
    for file_store in [None, Some("file")] {
        match file_store {
            None => remove(&mut ext, store),
            Some(value) => set(&mut ext, store, s(value)),
        }
        let (code, out) = fx.check(&fx.butler(), Some(&ext), DEV_ENV);
        assert_eq!(code, EXIT_CONFIG_INVALID, "{out}");
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{group}:")))
            .unwrap_or_else(|| panic!("{group} not named:\n{out}"));
        assert!(
            line.contains(store) && line.contains("redis://") && line.contains("not shared"),
            "{line}"
        );
    }
    // The same is what `run` loads: it refuses to start.
    let err = problems(fx.load(&fx.butler(), Some(&ext), DEV_ENV));
    assert!(err.has(&group), "{err}");
    // A shared store, or no group: fine.
    set(&mut ext, store, s("rediss://:pw@redis.internal:6380/0"));
    fx.load(&fx.butler(), Some(&ext), DEV_ENV)
        .expect("shared store");
    set(&mut ext, store, s("file"));
    remove(&mut ext, &group);
    fx.load(&fx.butler(), Some(&ext), DEV_ENV)
        .expect("one consumer on files");
    // A stateStore that does not parse is named once, for what it is.
    set(&mut ext, &group, s("g"));
    set(&mut ext, store, s("memcached://x"));
    let err = problems(fx.load(&fx.butler(), Some(&ext), DEV_ENV));
    assert!(err.has(store) && !err.has(&group), "{err}");
}

/// docs/configuration.md's "A complete extension file", as a reader copies it, with a minimal
/// Butler file: valid, and without a single warning. Only its CA file is replaced by one that
/// exists here.
#[test]
fn the_documented_complete_extension_file_passes_check_config_without_a_warning() {
    let fx = Fixture::new();
    let page = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let section = page
        .split("### A complete extension file")
        .nth(1)
        .expect("the section");
    let sample = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("its YAML block");
    let ca = fx.dir.path().join("ca.pem");
    let sample = sample.replace("/etc/qscloud-consumer/ca.pem", &ca.display().to_string());
    let ext: Value = serde_yaml_ng::from_str(&sample).expect("the sample is YAML");
    let butler: Value = serde_yaml_ng::from_str(&format!(
        "Butler:
  mqttConfig:
    qlikSenseCloud:
      event:
        mqttForward:
          enable: false
          broker: {{ host: broker.example.com, port: 8883, username: consumer, password: {FILE_PASSWORD} }}
          topic: {{ subscriptionRoot: qscloud/#, appReload: qscloud/app/reload }}
  qlikSenseCloud:
    enable: false
    event:
      mqtt:
        tenant:
          id: {TENANT_ID}
          tenantUrl: https://acme.eu.qlikcloud.com
          authType: jwt
          auth: {{ jwt: {{ token: {FILE_JWT} }} }}
"
    ))
    .expect("Butler file");
    let (code, out) = fx.check(&butler, Some(&ext), &[]);
    assert_eq!(code, EXIT_OK, "{out}");
    assert!(!out.contains("Warnings"), "{out}");
    assert!(out.contains("MQTT re-publish to qscloud-alerts/"), "{out}");
    assert_no_secrets(&out);
}

#[test]
fn duplicate_tenants_are_rejected() {
    let fx = Fixture::new();
    let mut ext = Value::Mapping(Mapping::new());
    set(
        &mut ext,
        "Butler.qlikSenseCloud.event.mqtt.tenants",
        serde_yaml_ng::from_str(&format!(
            "[{{id: {TENANT_ID}, tenantUrl: 'https://x.eu.qlikcloud.com', authType: jwt}}]"
        ))
        .expect("yaml"),
    );
    let err = problems(fx.load(&fx.butler(), Some(&ext), &[]));
    assert_eq!(
        err.message_for("Butler.qlikSenseCloud.event.mqtt.tenants[0].id"),
        Some(format!("tenant `{TENANT_ID}` is configured more than once").as_str())
    );
}

/// Email: Butler's SMTP keys with nodemailer's meaning, the password from the file or
/// `SMTP_PASSWORD` (never shown), Butler's template lookup, every mistake at its key.
#[test]
fn email_alert_and_smtp_server() {
    use consumer::config::SmtpSecurity;
    let fx = Fixture::new();
    let email = format!("{T}.alert.emailNotification.reloadAppFailure");
    let smtp = "Butler.emailNotification.smtp";

    let config = fx.load(&fx.butler(), None, &[]).expect("valid");
    let server = config.smtp.as_ref().expect("SMTP read: email is enabled");
    assert_eq!(
        (server.host.as_str(), server.port),
        ("my.emailhost.net", 587)
    );
    assert_eq!(server.security(), SmtpSecurity::StartTlsRequired);
    assert_eq!(server.tls_name(), "my.emailhost.net");
    assert!(server.reject_unauthorized);
    let auth = server.auth.as_ref().expect("auth enabled");
    assert_eq!(auth.user, "butler@somecompany.com");
    assert_eq!(auth.password.expose_secret(), SMTP_FILE_PASSWORD);
    let e = config.tenants[0].alert.get::<EmailAlert>().expect("email");
    assert_eq!(
        e.html_template_path.as_deref(),
        Some(
            fx.dir
                .path()
                .join("failed-reload-qscloud.handlebars")
                .as_path()
        )
    );
    assert!(e.text_template_path.is_none());

    // The environment wins, and neither password shows anywhere.
    let env = [("SMTP_PASSWORD", SMTP_ENV_PASSWORD)];
    let config = fx.load(&fx.butler(), None, &env).expect("valid");
    let auth = config
        .smtp
        .as_ref()
        .and_then(|s| s.auth.as_ref())
        .expect("auth");
    assert_eq!(auth.password.expose_secret(), SMTP_ENV_PASSWORD);
    assert_no_secrets(&format!("{config:?}"));
    let (code, out) = fx.check(&fx.butler(), None, &env);
    assert_eq!(code, EXIT_OK, "{out}");
    assert_no_secrets(&out);
    assert!(
        out.contains("SMTP: my.emailhost.net:587, STARTTLS required"),
        "{out}"
    );
    assert!(
        out.contains(
            "login butler@somecompany.com, password: *** from environment ($SMTP_PASSWORD)"
        ),
        "{out}"
    );
    assert!(
        out.contains("email (Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ) via my.emailhost.net:587"),
        "{out}"
    );

    // Implicit TLS, opportunistic STARTTLS, plain; the serverName and CA extension.
    let mut butler = fx.butler();
    set(&mut butler, &format!("{smtp}.secure"), b(true));
    set(
        &mut butler,
        &format!("{smtp}.tls.serverName"),
        s("mail.example.com"),
    );
    set(
        &mut butler,
        &format!("{smtp}.tls.caFile"),
        s(&fx.dir.path().join("ca.pem").display().to_string()),
    );
    let config = fx.load(&butler, None, &[]).expect("valid");
    let s1 = config.smtp.expect("smtp");
    assert_eq!(s1.security(), SmtpSecurity::ImplicitTls);
    assert_eq!(s1.tls_name(), "mail.example.com");
    assert!(s1.ca_file.is_some());
    set(&mut butler, &format!("{smtp}.secure"), b(false));
    set(&mut butler, &format!("{smtp}.tls.requireTLS"), b(false));
    // A login to a server beyond this machine needs TLS even without requireTLS: plain
    // STARTTLS-when-offered lets anyone in the path strip it and read the password.
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert_eq!(
        config.smtp.expect("smtp").security(),
        SmtpSecurity::StartTlsRequired
    );
    let (code, out) = fx.check(&butler, None, &[]);
    assert_eq!(code, EXIT_OK, "{out}");
    assert!(
        out.contains("STARTTLS required (a login over the network needs TLS)"),
        "{out}"
    );
    set(&mut butler, &format!("{smtp}.host"), s("localhost"));
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert_eq!(
        config.smtp.expect("smtp").security(),
        SmtpSecurity::StartTlsOpportunistic
    );
    set(&mut butler, &format!("{smtp}.host"), s("my.emailhost.net"));
    set(&mut butler, &format!("{smtp}.auth.enable"), b(false));
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert_eq!(
        config.smtp.expect("smtp").security(),
        SmtpSecurity::StartTlsOpportunistic
    );
    // ignoreTLS with a login to such a server is refused, at its key.
    set(&mut butler, &format!("{smtp}.tls.ignoreTLS"), b(true));
    set(&mut butler, &format!("{smtp}.auth.enable"), b(true));
    let err = problems(fx.load(&butler, None, &[]));
    assert_eq!(err.problems.len(), 1, "{err}");
    assert!(
        err.message_for(&format!("{smtp}.tls.ignoreTLS"))
            .is_some_and(|m| m.contains("plain text")),
        "{err}"
    );
    assert_no_secrets(&err.to_string());
    set(&mut butler, &format!("{smtp}.auth.enable"), b(false));
    let config = fx.load(&butler, None, &[]).expect("valid");
    let plain = config.smtp.expect("smtp");
    assert_eq!(plain.security(), SmtpSecurity::Plain);
    assert!(plain.auth.is_none());

    // Every mistake at its own key.
    let mut butler = fx.butler();
    set(&mut butler, "Butler.emailNotification.enable", b(false));
    remove(&mut butler, &format!("{smtp}.host"));
    set(&mut butler, &format!("{smtp}.port"), s("smtp"));
    set(&mut butler, &format!("{smtp}.tls.ignoreTLS"), b(true));
    set(
        &mut butler,
        &format!("{smtp}.tls.caFile"),
        s("/nonexistent/ca.pem"),
    );
    set(
        &mut butler,
        &format!("{smtp}.auth.password"),
        s("<your-secret-password>"),
    );
    set(
        &mut butler,
        &format!("{email}.htmlTemplateFile"),
        s("no-such-template"),
    );
    set(
        &mut butler,
        &format!("{email}.fromAddress"),
        s("Qlik Sense <not-an-address>"),
    );
    set(
        &mut butler,
        &format!("{email}.subject"),
        s("{{#if appName}}unclosed"),
    );
    set(
        &mut butler,
        &format!("{email}.recipients"),
        Value::Sequence(vec![s("ok@example.com"), s("two@@example.com")]),
    );
    let err = problems(fx.load(&butler, None, &[]));
    for path in [
        "Butler.emailNotification.enable".to_owned(),
        format!("{smtp}.host"),
        format!("{smtp}.port"),
        format!("{smtp}.tls.requireTLS"),
        format!("{smtp}.tls.caFile"),
        format!("{smtp}.auth.password"),
        format!("{email}.htmlTemplateFile"),
        format!("{email}.fromAddress"),
        format!("{email}.subject"),
        format!("{email}.recipients[1]"),
    ] {
        assert!(err.has(&path), "no problem at {path}: {err}");
    }
    assert_eq!(err.problems.len(), 10, "{err}");
    assert_eq!(
        err.message_for(&format!("{smtp}.host")),
        Some("missing"),
        "{err}"
    );
    assert!(
        err.message_for(&format!("{smtp}.auth.password"))
            .is_some_and(|m| m.contains("$SMTP_PASSWORD")),
        "{err}"
    );

    // Owner lists in both of the shapes Butler's schema and code use.
    let mut butler = fx.butler();
    set(
        &mut butler,
        &format!("{email}.appOwnerAlert.includeOwner.user"),
        Value::Sequence(vec![s("plain@example.com")]),
    );
    let config = fx.load(&butler, None, &[]).expect("valid");
    let owner = &config.tenants[0]
        .alert
        .get::<EmailAlert>()
        .expect("email")
        .app_owner_alert;
    assert_eq!(owner.include, ["plain@example.com"]);
    assert_eq!(owner.exclude, ["daniel@somecompany.com"]);
    assert!(owner.allows("anna@somecompany.com"), "includeAll");
    assert!(
        !owner.allows("Daniel@SomeCompany.com"),
        "excluded, any case"
    );

    // With email off, Butler's SMTP block may hold anything.
    let mut butler = fx.butler();
    set(&mut butler, &format!("{email}.enable"), b(false));
    set(&mut butler, "Butler.emailNotification.enable", b(false));
    set(&mut butler, &format!("{smtp}.host"), s("<host>"));
    set(
        &mut butler,
        &format!("{smtp}.auth.password"),
        s("<your-secret-password>"),
    );
    let config = fx.load(&butler, None, &[]).expect("valid");
    assert!(config.smtp.is_none());
}

#[test]
fn check_config_reads_the_broker_certificates_as_run_does() {
    let fx = Fixture::new();
    let dev_var = config::tenant_jwt_env_var(DEV_TENANT_ID);
    let env = [(dev_var.as_str(), DEV_JWT)];
    // The file exists (so loading accepts it) but holds no certificate.
    std::fs::write(fx.dir.path().join("ca.pem"), "not a certificate").expect("ca");
    let (code, out) = fx.check(&fx.butler(), Some(&fx.extensions()), &env);
    assert_eq!(code, EXIT_CONFIG_INVALID, "{out}");
    assert!(
        out.contains("Butler.mqttConfig.qlikSenseCloud.event.mqttForward.broker")
            && out.contains("ca.pem")
            && out.contains("Configuration NOT OK"),
        "{out}"
    );
    assert_no_secrets(&out);
}

/// The digest and watchdog keys (issues 15 and 16): defaults, values, and bad values named by
/// their key path; a tenant's own relay URL wins over the consumer's.
#[test]
fn digest_and_watchdog_keys() {
    let fx = Fixture::new();
    let butler = fx.butler();
    let config = fx.load(&butler, None, &[]).expect("loads");
    assert!(config.consumer.digest.enable);
    assert_eq!(config.consumer.digest.after_alerts, 3);
    assert_eq!(config.consumer.digest.window.as_secs(), 60);
    assert_eq!(config.consumer.watchdog.relay_url, None);
    assert_eq!(config.consumer.watchdog.interval.as_secs(), 300);
    assert!(config.consumer.watchdog.reenable);
    assert!(config.relay_url_of(&config.tenants[0]).is_none());

    let mut butler = fx.butler();
    let c = "Butler.qlikSenseCloud.consumer";
    set(&mut butler, &format!("{c}.digest.enable"), b(false));
    set(
        &mut butler,
        &format!("{c}.digest.afterAlerts"),
        Value::from(5),
    );
    set(
        &mut butler,
        &format!("{c}.digest.windowSeconds"),
        Value::from(30),
    );
    set(
        &mut butler,
        &format!("{c}.watchdog.relayUrl"),
        s("https://relay.example/qlik"),
    );
    set(
        &mut butler,
        &format!("{c}.watchdog.intervalSeconds"),
        Value::from(60),
    );
    set(&mut butler, &format!("{c}.watchdog.reenable"), b(false));
    set(
        &mut butler,
        &format!("{T}.watchdog.relayUrl"),
        s("https://dmz.example/relay"),
    );
    let config = fx.load(&butler, None, &[]).expect("loads");
    assert_eq!(
        config.consumer.digest.active(),
        None,
        "enable: false turns digests off"
    );
    assert_eq!(config.consumer.digest.after_alerts, 5);
    assert_eq!(config.consumer.watchdog.interval.as_secs(), 60);
    assert!(!config.consumer.watchdog.reenable);
    assert_eq!(
        config.relay_url_of(&config.tenants[0]).map(|u| u.as_str()),
        Some("https://dmz.example/relay")
    );

    let mut butler = fx.butler();
    set(
        &mut butler,
        &format!("{c}.digest.afterAlerts"),
        Value::from(0),
    );
    set(&mut butler, &format!("{c}.digest.windowSeconds"), s("soon"));
    set(
        &mut butler,
        &format!("{c}.watchdog.relayUrl"),
        s("http://relay.example/"),
    );
    set(
        &mut butler,
        &format!("{c}.watchdog.intervalSeconds"),
        Value::from(0),
    );
    set(&mut butler, &format!("{T}.watchdog.relayUrl"), s("relay"));
    let err = problems(fx.load(&butler, None, &[]));
    for path in [
        format!("{c}.digest.afterAlerts"),
        format!("{c}.digest.windowSeconds"),
        format!("{c}.watchdog.relayUrl"),
        format!("{c}.watchdog.intervalSeconds"),
        format!("{T}.watchdog.relayUrl"),
    ] {
        assert!(
            err.message_for(&path).is_some(),
            "{path} not named in:\n{err}"
        );
    }
    assert_eq!(err.problems.len(), 5, "{err}");
}

/// The `| `key` | default | meaning |` rows of the configuration reference between `heading`
/// and the next heading of its level, by key (backticks dropped from the default).
fn reference_rows(heading: &str) -> std::collections::HashMap<String, String> {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/configuration.md"),
    )
    .expect("docs/configuration.md");
    let start = page
        .find(heading)
        .unwrap_or_else(|| panic!("docs/configuration.md has no `{heading}`"));
    let rest = &page[start + heading.len()..];
    let end = rest.find("\n### ").unwrap_or(rest.len());
    rest[..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let key = cells.first()?.trim_start_matches("| ").trim_matches('`');
            Some((key.to_owned(), cells.get(1)?.replace('`', "")))
        })
        .collect()
}

fn assert_documented(heading: &str, keys: Vec<consumer::settings::keys::KeyDoc>) {
    let rows = reference_rows(heading);
    for key in keys {
        let row = rows.get(&key.key).unwrap_or_else(|| {
            panic!("docs/configuration.md, {heading}: no row for `{}`", key.key)
        });
        assert!(
            row.starts_with(&key.default),
            "docs/configuration.md, {heading}: `{}` defaults to `{}`, the page says `{row}`",
            key.key,
            key.default
        );
    }
}

/// Every key of the consumer section and of the broker block, as declared once in
/// `consumer::settings`, has its row in the configuration reference with its default: adding
/// a key without documenting it fails here.
#[test]
fn the_configuration_reference_lists_every_consumer_key_with_its_default() {
    let keys = consumer::config::ConsumerSettings::keys();
    assert!(keys.len() > 25, "{keys:?}");
    assert_documented(
        "### Consumer settings: `Butler.qlikSenseCloud.consumer`",
        keys,
    );
    let broker = consumer::config::BrokerConfig::extension_keys();
    assert_eq!(broker.len(), 11, "{broker:?}");
    assert_documented("### Broker: beside Butler's keys", broker);
    let smtp = consumer::config::SmtpConfig::extension_keys();
    assert_eq!(smtp.len(), 2, "{smtp:?}");
    assert_documented("Extension keys in `Butler.emailNotification.smtp`", smtp);
}
