//! A YAML value together with its dotted key path, and typed getters that record a [`Problem`]
//! instead of stopping, so one pass finds every mistake.

use std::net::IpAddr;

use serde_yaml_ng::Value;
use url::{Host, Url};

use super::error::Problem;

/// Collects problems while walking the document.
#[derive(Default)]
pub(crate) struct Problems(pub Vec<Problem>);

impl Problems {
    pub fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

#[derive(Clone)]
pub(crate) struct Node<'v> {
    pub path: String,
    /// `None` when the key is absent. YAML `null` (a key with only comments under it) counts as
    /// absent too, because that is how Butler's template writes empty lists.
    pub value: Option<&'v Value>,
}

impl<'v> Node<'v> {
    pub fn root(path: &str, value: Option<&'v Value>) -> Self {
        Self {
            path: path.to_owned(),
            value: value.filter(|v| !v.is_null()),
        }
    }

    pub fn is_present(&self) -> bool {
        self.value.is_some()
    }

    pub fn child(&self, key: &str) -> Node<'v> {
        let value = self
            .value
            .and_then(Value::as_mapping)
            .and_then(|m| m.get(key))
            .filter(|v| !v.is_null());
        Node {
            path: format!("{}.{key}", self.path),
            value,
        }
    }

    /// Follows a dotted relative path such as `auth.jwt.token`.
    pub fn at(&self, dotted: &str) -> Node<'v> {
        dotted
            .split('.')
            .fold(self.clone(), |node, key| node.child(key))
    }

    /// Records a problem when present but not a mapping; `required` also flags absence.
    pub fn expect_map(&self, problems: &mut Problems, required: bool) -> bool {
        match self.value {
            Some(Value::Mapping(_)) => true,
            Some(_) => {
                problems.add(&self.path, "must be a mapping of keys");
                false
            }
            None => {
                if required {
                    problems.add(&self.path, "missing");
                }
                false
            }
        }
    }

    /// The entries of a sequence, each with its `[index]` path.
    pub fn items(&self, problems: &mut Problems) -> Vec<Node<'v>> {
        match self.value {
            None => Vec::new(),
            Some(Value::Sequence(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| Node {
                    path: format!("{}[{i}]", self.path),
                    value: Some(v).filter(|v| !v.is_null()),
                })
                .collect(),
            Some(_) => {
                problems.add(&self.path, "must be a list");
                Vec::new()
            }
        }
    }

    /// A scalar as text. Numbers and booleans count: `comment: 2024` is a fine comment.
    fn scalar(&self) -> Option<Result<String, ()>> {
        self.value.map(|v| match v {
            Value::String(s) => Ok(s.trim().to_owned()),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            _ => Err(()),
        })
    }

    /// A required non-empty string.
    pub fn string(&self, problems: &mut Problems) -> Option<String> {
        match self.scalar() {
            None => {
                problems.add(&self.path, "missing");
                None
            }
            Some(Err(())) => {
                problems.add(&self.path, "must be a text value");
                None
            }
            Some(Ok(s)) if s.is_empty() => {
                problems.add(&self.path, "is empty");
                None
            }
            Some(Ok(s)) => Some(s),
        }
    }

    /// An optional string; empty counts as absent.
    pub fn opt_string(&self, problems: &mut Problems) -> Option<String> {
        match self.scalar() {
            None => None,
            Some(Err(())) => {
                problems.add(&self.path, "must be a text value");
                None
            }
            Some(Ok(s)) => Some(s).filter(|s| !s.is_empty()),
        }
    }

    /// A required string that must not be a template placeholder such as `<username>`.
    pub fn real_string(&self, problems: &mut Problems) -> Option<String> {
        let s = self.string(problems)?;
        if is_placeholder(&s) {
            problems.add(&self.path, "still holds a template placeholder (<...>)");
            return None;
        }
        Some(s)
    }

    fn bool_value(&self, problems: &mut Problems) -> Option<bool> {
        match self.value? {
            Value::Bool(b) => Some(*b),
            Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Some(true),
            Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Some(false),
            _ => {
                problems.add(&self.path, "must be true or false");
                None
            }
        }
    }

    pub fn bool_required(&self, problems: &mut Problems) -> Option<bool> {
        if !self.is_present() {
            problems.add(&self.path, "missing (true or false)");
            return None;
        }
        self.bool_value(problems)
    }

    pub fn bool_or(&self, problems: &mut Problems, default: bool) -> bool {
        self.bool_value(problems).unwrap_or(default)
    }

    fn u64_value(&self, problems: &mut Problems, min: u64, max: u64) -> Option<u64> {
        let n = match self.value? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                problems.add(
                    &self.path,
                    format!("must be a whole number from {min} to {max}"),
                );
                None
            }
        }
    }

    pub fn u64_required(&self, problems: &mut Problems, min: u64, max: u64) -> Option<u64> {
        if !self.is_present() {
            problems.add(&self.path, "missing");
            return None;
        }
        self.u64_value(problems, min, max)
    }

    pub fn u64_or(&self, problems: &mut Problems, default: u64, min: u64, max: u64) -> u64 {
        self.u64_value(problems, min, max).unwrap_or(default)
    }

    /// A required http(s) URL: https anywhere, plain http only on a loopback host.
    /// `secret`: the URL is a credential, so the message never quotes it.
    pub fn url(&self, problems: &mut Problems, secret: bool) -> Option<Url> {
        let text = self.string(problems)?;
        match check_url(&text) {
            Ok(url) => Some(url),
            Err(message) => {
                let message = if secret {
                    message
                } else {
                    format!("{message} (got `{text}`)")
                };
                problems.add(&self.path, message);
                None
            }
        }
    }

    /// An optional path to a file that must exist (a CA bundle, a certificate). The path is
    /// returned even when the file is missing, so later checks see it is set.
    pub fn existing_file(&self, problems: &mut Problems) -> Option<std::path::PathBuf> {
        let path = std::path::PathBuf::from(self.opt_string(problems)?);
        if !path.is_file() {
            problems.add(
                &self.path,
                format!("file `{}` does not exist", path.display()),
            );
        }
        Some(path)
    }

    /// An optional URL shown to people (QMC / hub links): http or https, any host, since it is
    /// only a link in a message.
    pub fn link(&self, problems: &mut Problems) -> Option<String> {
        let text = self.opt_string(problems)?;
        match Url::parse(&text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(text),
            Ok(_) => {
                problems.add(&self.path, format!("must be an http(s) URL (got `{text}`)"));
                None
            }
            Err(_) => {
                problems.add(&self.path, format!("not a URL (got `{text}`)"));
                None
            }
        }
    }
}

/// Butler's template ships values like `<username>` and `<JWT token>`.
pub(crate) fn is_placeholder(s: &str) -> bool {
    let s = s.trim();
    s.starts_with('<') && s.ends_with('>')
}

/// https anywhere; http only where nothing crosses a network (127.0.0.0/8, ::1, localhost).
pub(crate) fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|_| "not a URL".to_owned())?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(
                "plain http:// is accepted only for loopback hosts (127.0.0.0/8, ::1, localhost): use https://"
                    .to_owned(),
            );
        }
        _ => return Err("must be an https:// URL".to_owned()),
    }
    if url.host().is_none() {
        return Err("URL has no host".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain a user name or password".to_owned());
    }
    Ok(url)
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_rule() {
        assert!(check_url("http://127.0.0.1:8080/x").is_ok());
        assert!(check_url("http://127.9.9.9/").is_ok());
        assert!(check_url("http://[::1]:9000").is_ok());
        assert!(check_url("http://localhost:3000").is_ok());
        assert!(check_url("http://LOCALHOST").is_ok());
        assert!(check_url("https://tenant.eu.qlikcloud.com").is_ok());
        assert!(check_url("http://tenant.eu.qlikcloud.com").is_err());
        assert!(check_url("http://10.0.0.1").is_err());
        assert!(check_url("http://localhost.evil.com").is_err());
        assert!(check_url("http://128.0.0.1").is_err());
        assert!(check_url("ftp://localhost").is_err());
        assert_eq!(check_url("tenant.example").unwrap_err(), "not a URL");
        assert!(check_url("https://user:pw@tenant.example").is_err());
    }

    #[test]
    fn placeholders() {
        assert!(is_placeholder("<JWT token>"));
        assert!(is_placeholder(" <username> "));
        assert!(!is_placeholder("user<1>x"));
    }
}
