//! Secrets in the configuration: where each came from, URLs that are credentials, and the one
//! rule every secret key follows (the environment wins over the file, a placeholder is refused).

use std::fmt;

use secrecy::SecretString;
use url::Url;

use super::node::{Node, Problems, is_placeholder};

/// The process environment, or what a test supplies instead.
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A variable that is set to something other than blanks.
pub(crate) fn env_var(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.trim().is_empty())
}

/// Where a secret was read from. Names the variable or key, never the value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// From the config file at this key path.
    File(String),
    /// From this environment variable.
    Env(String),
    /// Not set (only possible for optional secrets such as the broker password).
    None,
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::File(path) => write!(f, "from file ({path})"),
            SecretSource::Env(var) => write!(f, "from environment (${var})"),
            SecretSource::None => f.write_str("not set"),
        }
    }
}

/// How [`resolve_secret`] treats a key that is absent or holds a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Absent {
    /// A problem: the secret is needed.
    Refused,
    /// Fine: the secret is optional. A placeholder counts as absent too.
    Allowed,
    /// Fine when absent, but a placeholder is a problem (it was meant to be set).
    PlaceholderRefused,
}

/// The first of `vars` that is set, else the value at `node`: the environment wins so a secret
/// can stay out of a file that is copied around. A template placeholder (`<...>`) in the file
/// is never taken for the secret. `None` when there is none (with a problem where `absent`
/// says so).
pub(crate) fn resolve_secret(
    node: &Node<'_>,
    env: Env<'_>,
    vars: &[&str],
    absent: Absent,
    p: &mut Problems,
) -> Option<(SecretString, SecretSource)> {
    for var in vars {
        if let Some(value) = env_var(env, var) {
            return Some((
                SecretString::from(value),
                SecretSource::Env((*var).to_owned()),
            ));
        }
    }
    let in_env: Vec<String> = vars.iter().map(|v| format!("${v}")).collect();
    let hint = format!("set it here or in {}", in_env.join(" / "));
    match node.opt_string(p) {
        // Present but not text: the problem is already recorded.
        None if node.is_present() => None,
        None => {
            if absent == Absent::Refused {
                p.add(&node.path, format!("missing: {hint}"));
            }
            None
        }
        Some(value) if is_placeholder(&value) => {
            if absent != Absent::Allowed {
                p.add(
                    &node.path,
                    format!("still holds a template placeholder (<...>): {hint}"),
                );
            }
            None
        }
        Some(value) => Some((
            SecretString::from(value),
            SecretSource::File(node.path.clone()),
        )),
    }
}

/// A URL that is a credential (Slack/Teams incoming webhooks, webhook URLs with tokens).
/// `Debug` and `Display` show only scheme, host and port.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretUrl(Url);

impl SecretUrl {
    pub fn new(url: Url) -> Self {
        Self(url)
    }

    /// The full URL, for making the request. Never log it.
    pub fn expose(&self) -> &Url {
        &self.0
    }

    /// `https://hooks.slack.com/***`: enough to recognise the destination.
    pub fn masked(&self) -> String {
        let host = self.0.host_str().unwrap_or("?");
        match self.0.port() {
            Some(port) => format!("{}://{host}:{port}/***", self.0.scheme()),
            None => format!("{}://{host}/***", self.0.scheme()),
        }
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}
