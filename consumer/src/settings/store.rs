//! High availability and operations keys of `Butler.qlikSenseCloud.consumer`: where the shared
//! decisions live (`stateStore`, `claimLeaseSeconds`) and where metrics are served
//! (`metrics.listen`).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::keys::{Custom, KeyDoc, Kind, SECONDS, Span};
use super::node::{Node, Problems};
use super::secret::{Env, env_var};

/// Password for a `redis://` / `rediss://` state store without one in its user info.
pub const REDIS_PASSWORD_ENV: &str = "REDIS_PASSWORD";

/// `stateStore`: the embedded default (files in the state directory), or Redis / Valkey.
#[derive(Clone, PartialEq, Eq)]
pub enum StateStoreConfig {
    File,
    Redis(RedisUrl),
}

/// A Redis URL with its password resolved. `Debug` and `Display` mask the password.
#[derive(Clone)]
pub struct RedisUrl {
    /// The URL with the password (from user info or `REDIS_PASSWORD`) filled in.
    url: SecretString,
    /// The URL with the password masked, for logs.
    display: String,
}

impl PartialEq for RedisUrl {
    fn eq(&self, other: &Self) -> bool {
        self.url.expose_secret() == other.url.expose_secret()
    }
}
impl Eq for RedisUrl {}

impl RedisUrl {
    pub fn expose(&self) -> &str {
        self.url.expose_secret()
    }
    pub fn tls(&self) -> bool {
        self.display.starts_with("rediss://")
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.display)
    }
}

impl fmt::Debug for StateStoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StateStoreConfig::File => f.write_str("File"),
            StateStoreConfig::Redis(url) => write!(f, "Redis({url})"),
        }
    }
}

/// The HA and operations settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaConfig {
    pub state_store: StateStoreConfig,
    /// `claimLeaseSeconds` (default 30): how long an instance's claim on an event lasts without
    /// renewal, i.e. how soon another instance takes over the events of one that died.
    pub claim_lease: Duration,
    /// `metrics.listen`: where `/metrics` and `/healthz` are served; off when absent.
    pub metrics_listen: Option<SocketAddr>,
}

/// `stateStore`: `file`, or a `redis://` / `rediss://` URL.
const STATE_STORE: Custom = Custom {
    key: "stateStore",
    default: "file",
};
/// `metrics.listen`: `host:port` for `/metrics` and `/healthz`.
const METRICS_LISTEN: Custom = Custom {
    key: "metrics.listen",
    default: "off",
};
/// `claimLeaseSeconds`: how long a claim lasts unrenewed (Redis store).
const CLAIM_LEASE: Span = Span {
    key: "claimLeaseSeconds",
    default: 30,
    min: 1,
    max: 3600,
    unit: SECONDS,
};

impl HaConfig {
    /// Its keys (below `Butler.qlikSenseCloud.consumer`) with their defaults.
    pub(crate) fn keys() -> Vec<KeyDoc> {
        vec![
            STATE_STORE.doc(""),
            CLAIM_LEASE.docs("", "").remove(0),
            METRICS_LISTEN.doc(""),
        ]
    }
}

pub(crate) fn parse_ha(ext: &Node<'_>, env: Env<'_>, p: &mut Problems) -> HaConfig {
    let node = STATE_STORE.at(ext);
    let state_store = match node.opt_string(p) {
        None => StateStoreConfig::File,
        Some(text) if text == "file" => StateStoreConfig::File,
        Some(text) => match redis_url(&text, env) {
            Ok(url) => StateStoreConfig::Redis(url),
            Err(reason) => {
                p.add(&node.path, reason);
                StateStoreConfig::File
            }
        },
    };
    ext.child("metrics").expect_map(p, false);
    let listen = METRICS_LISTEN.at(ext);
    let metrics_listen = listen
        .opt_string(p)
        .and_then(|text| match text.parse::<SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                p.add(
                    &listen.path,
                    "must be an IP address and port, e.g. 127.0.0.1:9464",
                );
                None
            }
        });
    HaConfig {
        state_store,
        claim_lease: CLAIM_LEASE.read(&ext.child(CLAIM_LEASE.key), p),
        metrics_listen,
    }
}

/// Checks a `redis://` / `rediss://` URL and fills in the password. The reason never contains
/// the password (the URL's own text is not echoed).
fn redis_url(text: &str, env: Env<'_>) -> Result<RedisUrl, String> {
    let mut url = Url::parse(text)
        .map_err(|e| format!("must be `file` or a redis:// or rediss:// URL ({e})"))?;
    if !matches!(url.scheme(), "redis" | "rediss") {
        return Err(format!(
            "must be `file` or a redis:// or rediss:// URL, not {}://",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the Redis URL has no host".into());
    }
    let db = url.path().trim_start_matches('/');
    if !db.is_empty() && db.parse::<u16>().is_err() {
        return Err("the Redis URL's path must be a database number, e.g. /0".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the Redis URL takes no query or fragment".into());
    }
    if url.password().is_none()
        && let Some(password) = env_var(env, REDIS_PASSWORD_ENV)
    {
        url.set_password(Some(&password))
            .map_err(|()| "the Redis URL cannot carry a password".to_owned())?;
    }
    let mut display = url.clone();
    if display.password().is_some() {
        let _ = display.set_password(Some("****"));
    }
    Ok(RedisUrl {
        url: SecretString::from(url.to_string()),
        display: display.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str, env: &dyn Fn(&str) -> Option<String>) -> (HaConfig, Vec<String>) {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("yaml");
        let node = Node::root("Butler.qlikSenseCloud.consumer", Some(&value));
        let mut p = Problems::default();
        let ha = parse_ha(&node, env, &mut p);
        let problems = p.0.iter().map(|p| format!("{}: {}", p.path, p.message));
        (ha, problems.collect())
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn absent_or_file_is_the_embedded_store() {
        let (ha, problems) = parse("{}", &no_env);
        assert_eq!(ha.state_store, StateStoreConfig::File);
        assert_eq!(ha.metrics_listen, None);
        assert_eq!(ha.claim_lease, Duration::from_secs(30));
        assert!(problems.is_empty());
        let (ha, _) = parse("stateStore: file", &no_env);
        assert_eq!(ha.state_store, StateStoreConfig::File);
    }

    #[test]
    fn redis_password_from_the_environment_is_masked_in_display() {
        let env = |name: &str| (name == REDIS_PASSWORD_ENV).then(|| "s3cret-pw".to_owned());
        let (ha, problems) = parse(
            "stateStore: rediss://cache.example.com:6380/2\nmetrics:\n  listen: 127.0.0.1:9464",
            &env,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let StateStoreConfig::Redis(url) = &ha.state_store else {
            panic!("redis expected")
        };
        assert!(url.tls());
        assert!(url.expose().contains("s3cret-pw"));
        assert!(!format!("{url} {:?}", ha).contains("s3cret-pw"));
        assert_eq!(ha.metrics_listen, Some("127.0.0.1:9464".parse().unwrap()));
        // A password in the URL wins over the environment and is masked too.
        let (ha, _) = parse("stateStore: redis://:inurl-pw@127.0.0.1:6379/0", &env);
        let StateStoreConfig::Redis(url) = &ha.state_store else {
            panic!("redis expected")
        };
        assert!(url.expose().contains("inurl-pw"));
        assert!(!url.to_string().contains("inurl-pw"));
    }

    #[test]
    fn bad_values_name_the_key_and_never_echo_a_password() {
        for (yaml, key) in [
            (
                "stateStore: http://:pw-xyz@h:1/0",
                "Butler.qlikSenseCloud.consumer.stateStore",
            ),
            (
                "stateStore: redis://:pw-xyz@h:1/db",
                "Butler.qlikSenseCloud.consumer.stateStore",
            ),
            (
                "stateStore: 'redis://:pw-xyz@'",
                "Butler.qlikSenseCloud.consumer.stateStore",
            ),
            (
                "metrics: {listen: 'localhost'}",
                "Butler.qlikSenseCloud.consumer.metrics.listen",
            ),
            (
                "claimLeaseSeconds: 0",
                "Butler.qlikSenseCloud.consumer.claimLeaseSeconds",
            ),
        ] {
            let (_, problems) = parse(yaml, &no_env);
            assert_eq!(problems.len(), 1, "{yaml}: {problems:?}");
            assert!(problems[0].starts_with(key), "{yaml}: {problems:?}");
            assert!(!problems[0].contains("pw-xyz"), "{problems:?}");
        }
    }
}
