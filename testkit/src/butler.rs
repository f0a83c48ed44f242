//! Consumer configurations built as trees instead of YAML written out by hand: Butler's file
//! (Butler's own keys, as a Butler user has them) and the extension file (the consumer's keys,
//! which the consumer merges over Butler's file).
//!
//! ```ignore
//! let mut config = Config::new(&Broker::new("127.0.0.1", 1883), "qscloud", &Tenant::new(id, url, jwt));
//! config
//!     .client("consumer-1")
//!     .consumer("stateDirectory", dir.join("state").display().to_string())
//!     .consumer("redelivery.scheduleSeconds", json!([1, 5]))
//!     .webhook(&Webhook::new("ops", &url));
//! let (butler, extensions) = config.write(dir);
//! ```
//!
//! A key path is written as in the configuration reference, dots between the keys
//! (`retry.maxAttempts`); each method says where its paths start.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// Where the consumer's section is, in either file.
const CONSUMER: &str = "qlikSenseCloud.consumer";
/// Butler's MQTT forwarding section, in either file.
const FORWARD: &str = "mqttConfig.qlikSenseCloud.event.mqttForward";
/// Butler's (first) tenant.
const TENANT: &str = "qlikSenseCloud.event.mqtt.tenant";

/// The broker the consumer subscribes on (Butler's `mqttForward.broker`).
#[derive(Debug, Clone)]
pub struct Broker {
    pub host: String,
    pub port: u16,
}

impl Broker {
    pub fn new(host: &str, port: u16) -> Broker {
        Broker {
            host: host.to_owned(),
            port,
        }
    }
}

impl From<&crate::TestBroker> for Broker {
    /// The broker's MQTT 3.1.1 port.
    fn from(broker: &crate::TestBroker) -> Broker {
        Broker::new(&broker.host, broker.port)
    }
}

/// A Qlik Cloud tenant with JWT auth (Butler's `qlikSenseCloud.event.mqtt.tenant`).
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub url: String,
    pub jwt: String,
}

impl Tenant {
    pub fn new(id: &str, url: &str, jwt: &str) -> Tenant {
        Tenant {
            id: id.to_owned(),
            url: url.to_owned(),
            jwt: jwt.to_owned(),
        }
    }

    fn tree(&self) -> Value {
        json!({
            "id": self.id,
            "tenantUrl": self.url,
            "authType": "jwt",
            "auth": {"jwt": {"token": self.jwt}},
        })
    }
}

/// Slack or Teams, Butler's `slackNotification` / `teamsNotification` of a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatKind {
    Slack,
    Teams,
}

impl ChatKind {
    pub fn key(self) -> &'static str {
        match self {
            ChatKind::Slack => "slackNotification",
            ChatKind::Teams => "teamsNotification",
        }
    }
}

/// A Slack or Teams alert on failed reloads (`reloadAppFailure`), with the fields tests vary;
/// the rest as in Butler's sample file.
#[derive(Debug, Clone)]
pub struct Chat {
    pub webhook_url: String,
    /// `messageType: formatted` (the template file) instead of `basic`.
    pub formatted: bool,
    pub template_file: PathBuf,
    /// `alertEnableByTag`: only apps with this tag.
    pub tag: Option<String>,
    pub basic_content_only: bool,
    /// `rateLimit` seconds (0: none).
    pub rate_limit: u64,
}

impl Chat {
    fn tree(&self) -> Value {
        json!({
            "enable": true,
            "alertEnableByTag": {
                "enable": self.tag.is_some(),
                "tag": self.tag.as_deref().unwrap_or("Butler - alert"),
            },
            "basicContentOnly": self.basic_content_only,
            "webhookURL": self.webhook_url,
            "channel": "sense-failures",
            "fromUser": "Qlik Sense",
            "iconEmoji": ":ghost:",
            "messageType": if self.formatted { "formatted" } else { "basic" },
            "basicMsgTemplate": "Qlik Cloud app reload failed: \"{{appName}}\"",
            "rateLimit": self.rate_limit,
            "headScriptLogLines": 5,
            "tailScriptLogLines": 3,
            "templateFile": self.template_file.display().to_string(),
        })
    }
}

/// A generic webhook destination (`consumer.destinations.webhook[]`).
#[derive(Debug, Clone)]
pub struct Webhook {
    pub name: String,
    pub url: String,
    /// `headers`: name and value.
    pub headers: Vec<(String, String)>,
    /// `timeoutSeconds` (default: the consumer's).
    pub timeout_seconds: Option<u64>,
}

impl Webhook {
    pub fn new(name: &str, url: &str) -> Webhook {
        Webhook {
            name: name.to_owned(),
            url: url.to_owned(),
            headers: Vec::new(),
            timeout_seconds: None,
        }
    }

    fn tree(&self) -> Value {
        let mut hook = json!({"name": self.name, "url": self.url});
        if !self.headers.is_empty() {
            let headers: Vec<Value> = self
                .headers
                .iter()
                .map(|(name, value)| json!({"name": name, "value": value}))
                .collect();
            hook["headers"] = headers.into();
        }
        if let Some(timeout) = self.timeout_seconds {
            hook["timeoutSeconds"] = timeout.into();
        }
        hook
    }
}

/// The two files of a consumer's configuration, as trees. Every setter returns `&mut Self`.
#[derive(Debug, Clone)]
pub struct Config {
    butler: Value,
    extensions: Value,
}

/// The node at `path` (dots between keys) below `root`, made (as mappings) where missing.
fn node<'a>(root: &'a mut Value, path: &str) -> &'a mut Value {
    path.split('.')
        .filter(|k| !k.is_empty())
        .fold(root, |node, key| {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            node.as_object_mut()
                .expect("a mapping")
                .entry(key)
                .or_insert(Value::Null)
        })
}

/// Appends `item` to the list `node` is (made one if it is not).
fn push(node: &mut Value, item: Value) {
    if !node.is_array() {
        *node = json!([]);
    }
    node.as_array_mut().expect("a list").push(item);
}

/// `b` merged into `a`: mappings key by key, anything else replaced.
fn merge(a: &mut Value, b: &Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in b {
                merge(a.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

fn yaml(tree: &Value) -> String {
    serde_yaml_ng::to_string(tree).expect("a JSON tree is YAML")
}

impl Config {
    /// Butler's keys the consumer needs: MQTT forwarding enabled to `broker`, subscribed to
    /// `<topic_root>/#` (app reloads under `<topic_root>/app/reload`), Qlik Cloud enabled with
    /// one tenant. The extension file starts empty.
    pub fn new(broker: &Broker, topic_root: &str, tenant: &Tenant) -> Config {
        let mut config = Config {
            butler: json!({"Butler": {}}),
            extensions: json!({"Butler": {}}),
        };
        config
            .butler(
                FORWARD,
                json!({
                    "enable": true,
                    "broker": {"host": broker.host, "port": broker.port},
                    "topic": {
                        "subscriptionRoot": format!("{topic_root}/#"),
                        "appReload": format!("{topic_root}/app/reload"),
                    },
                }),
            )
            .butler("qlikSenseCloud.enable", true)
            .butler(TENANT, tenant.tree());
        config
    }

    /// Sets a key of Butler's file, the path below `Butler`.
    pub fn butler(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        *node(&mut self.butler, &format!("Butler.{path}")) = value.into();
        self
    }

    /// Sets a key of the tenant's, the path below `qlikSenseCloud.event.mqtt.tenant`
    /// (`comment`, `alert.emailNotification`, …).
    pub fn tenant(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        self.butler(&format!("{TENANT}.{path}"), value)
    }

    /// Adds a tenant after the first (Butler's `qlikSenseCloud.event.mqtt.tenants` list).
    pub fn another_tenant(&mut self, tenant: &Tenant) -> &mut Self {
        let list = node(&mut self.butler, "Butler.qlikSenseCloud.event.mqtt.tenants");
        push(list, tenant.tree());
        self
    }

    /// Butler's `scriptLog.storeOnDisk.qsCloud.appReloadFailure`.
    pub fn script_log(&mut self, enable: bool, directory: &Path) -> &mut Self {
        self.butler(
            "scriptLog.storeOnDisk.qsCloud.appReloadFailure",
            json!({"enable": enable, "logDirectory": directory.display().to_string()}),
        )
    }

    /// The tenant's Slack or Teams alert; `None` writes it switched off.
    pub fn chat(&mut self, kind: ChatKind, chat: Option<&Chat>) -> &mut Self {
        let alert = chat.map_or_else(|| json!({"enable": false}), Chat::tree);
        self.tenant(&format!("alert.{}.reloadAppFailure", kind.key()), alert)
    }

    /// Sets a key of the extension file, the path below `Butler`.
    pub fn extension(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        *node(&mut self.extensions, &format!("Butler.{path}")) = value.into();
        self
    }

    /// Sets a key of the consumer's section, the path below `qlikSenseCloud.consumer`
    /// (`stateDirectory`, `retry.maxAttempts`, …).
    pub fn consumer(&mut self, path: &str, value: impl Into<Value>) -> &mut Self {
        self.extension(&format!("{CONSUMER}.{path}"), value)
    }

    /// The consumer's own MQTT connection: plain TCP, this client id, its session kept
    /// (`cleanSession: false`).
    pub fn client(&mut self, client_id: &str) -> &mut Self {
        self.extension(
            &format!("{FORWARD}.broker"),
            json!({"tls": false, "clientId": client_id, "cleanSession": false}),
        )
    }

    /// MQTT 5 on `port`: a session that outlives a disconnect by an hour, and a shared
    /// subscription group when given.
    pub fn mqtt5(&mut self, port: u16, shared_group: Option<&str>) -> &mut Self {
        self.butler(&format!("{FORWARD}.broker.port"), port)
            .extension(&format!("{FORWARD}.broker.mqttVersion"), "5")
            .extension(&format!("{FORWARD}.broker.sessionExpirySeconds"), 3600);
        if let Some(group) = shared_group {
            self.extension(&format!("{FORWARD}.broker.sharedSubscriptionGroup"), group);
        }
        self
    }

    /// Adds a generic webhook destination.
    pub fn webhook(&mut self, webhook: &Webhook) -> &mut Self {
        let list = node(
            &mut self.extensions,
            &format!("Butler.{CONSUMER}.destinations.webhook"),
        );
        if !list.is_array() {
            *list = json!([]);
        }
        list.as_array_mut().expect("a list").push(webhook.tree());
        self
    }

    /// Butler's file as YAML.
    pub fn butler_yaml(&self) -> String {
        yaml(&self.butler)
    }

    /// The extension file as YAML.
    pub fn extensions_yaml(&self) -> String {
        yaml(&self.extensions)
    }

    /// Both in one file, the extension keys merged into Butler's (as a Butler user may keep them).
    pub fn one_file_yaml(&self) -> String {
        let mut tree = self.butler.clone();
        merge(&mut tree, &self.extensions);
        yaml(&tree)
    }

    /// Writes `butler.yaml` and `consumer-extensions.yaml` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let butler = dir.join("butler.yaml");
        let extensions = dir.join("consumer-extensions.yaml");
        std::fs::write(&butler, self.butler_yaml())
            .unwrap_or_else(|e| panic!("{}: {e}", butler.display()));
        std::fs::write(&extensions, self.extensions_yaml())
            .unwrap_or_else(|e| panic!("{}: {e}", extensions.display()));
        (butler, extensions)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_land_where_the_paths_say() {
        let mut config = Config::new(
            &Broker::new("127.0.0.1", 1883),
            "root",
            &Tenant::new("t", "http://127.0.0.1:9", "jwt"),
        );
        config
            .client("c")
            .consumer("retry.maxAttempts", 3)
            .webhook(&Webhook::new("a", "http://a"))
            .webhook(&Webhook::new("b", "http://b"));
        let butler: Value = serde_yaml_ng::from_str(&config.butler_yaml()).expect("YAML");
        let ext: Value = serde_yaml_ng::from_str(&config.extensions_yaml()).expect("YAML");
        let forward = &butler["Butler"]["mqttConfig"]["qlikSenseCloud"]["event"]["mqttForward"];
        assert_eq!(forward["topic"]["subscriptionRoot"], "root/#");
        assert_eq!(forward["broker"]["port"], 1883);
        let consumer = &ext["Butler"]["qlikSenseCloud"]["consumer"];
        assert_eq!(consumer["retry"]["maxAttempts"], 3);
        assert_eq!(consumer["destinations"]["webhook"][1]["url"], "http://b");
        let one: Value = serde_yaml_ng::from_str(&config.one_file_yaml()).expect("YAML");
        assert_eq!(
            one["Butler"]["mqttConfig"]["qlikSenseCloud"]["event"]["mqttForward"]["broker"],
            json!({"host": "127.0.0.1", "port": 1883, "tls": false, "clientId": "c", "cleanSession": false})
        );
    }
}
