//! One definition per key. A settings section declares each key once, with [`section!`]: its
//! name, type, default, bounds and one-line doc. That declaration is what parses the key (with
//! its key path in every problem), what `check-config` prints, and what the configuration
//! reference is checked against (every key with its default, see the test in
//! `consumer/tests/config.rs`).

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::node::{Node, Problems};

/// One key as the reference documents it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyDoc {
    /// Dotted, below `Butler.qlikSenseCloud.consumer`, e.g. `retry.maxAttempts`.
    pub key: String,
    /// The default as the reference shows it, e.g. `5`, `true`, `none`.
    pub default: String,
    pub doc: String,
}

/// How one key is read, defaulted and shown.
pub(crate) trait Kind {
    type Value;
    /// The key's name in its section, e.g. `maxAttempts`.
    fn key(&self) -> &'static str;
    /// The value at `node` (the key's own node), its default when absent; a bad value is a
    /// problem at the key's path, and the default stands in.
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> Self::Value;
    fn default_value(&self) -> Self::Value;
    /// A value as `check-config` and the reference show it.
    fn show(&self, value: &Self::Value) -> String;
    /// The reference's rows for this key (a section has one per key of its own).
    fn docs(&self, prefix: &str, doc: &str) -> Vec<KeyDoc> {
        vec![KeyDoc {
            key: join(prefix, self.key()),
            default: self.show(&self.default_value()),
            doc: doc.to_owned(),
        }]
    }
}

pub(crate) fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A whole number in `min..=max`, as `T`.
pub(crate) struct Count<T> {
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub as_type: fn(u64) -> T,
}

impl<T: Copy + std::fmt::Display> Kind for Count<T> {
    type Value = T;
    fn key(&self) -> &'static str {
        self.key
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> T {
        (self.as_type)(node.u64_or(p, self.default, self.min, self.max))
    }
    fn default_value(&self) -> T {
        (self.as_type)(self.default)
    }
    fn show(&self, value: &T) -> String {
        value.to_string()
    }
}

/// A duration given as a whole number of `unit` (seconds, milliseconds, hours).
pub(crate) struct Span {
    pub key: &'static str,
    pub default: u64,
    pub min: u64,
    pub max: u64,
    pub unit: Duration,
}

impl Kind for Span {
    type Value = Duration;
    fn key(&self) -> &'static str {
        self.key
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> Duration {
        self.unit.saturating_mul(
            u32::try_from(node.u64_or(p, self.default, self.min, self.max)).unwrap_or(u32::MAX),
        )
    }
    fn default_value(&self) -> Duration {
        self.unit
            .saturating_mul(u32::try_from(self.default).unwrap_or(u32::MAX))
    }
    fn show(&self, value: &Duration) -> String {
        (millis(*value) / millis(self.unit).max(1)).to_string()
    }
}

pub(crate) const SECONDS: Duration = Duration::from_secs(1);
pub(crate) const MILLIS: Duration = Duration::from_millis(1);
pub(crate) const HOURS: Duration = Duration::from_secs(3600);

/// `true` or `false`.
pub(crate) struct Flag {
    pub key: &'static str,
    pub default: bool,
}

impl Kind for Flag {
    type Value = bool;
    fn key(&self) -> &'static str {
        self.key
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> bool {
        node.bool_or(p, self.default)
    }
    fn default_value(&self) -> bool {
        self.default
    }
    fn show(&self, value: &bool) -> String {
        value.to_string()
    }
}

/// A list of whole seconds, each in `min..=max`; the list replaces the default as a whole.
pub(crate) struct SecondsList {
    pub key: &'static str,
    pub default: &'static [u64],
    pub min: u64,
    pub max: u64,
}

impl Kind for SecondsList {
    type Value = Vec<Duration>;
    fn key(&self) -> &'static str {
        self.key
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> Vec<Duration> {
        if !node.is_present() {
            return self.default_value();
        }
        node.items(p)
            .iter()
            .filter_map(|item| item.u64_required(p, self.min, self.max))
            .map(Duration::from_secs)
            .collect()
    }
    fn default_value(&self) -> Vec<Duration> {
        self.default
            .iter()
            .copied()
            .map(Duration::from_secs)
            .collect()
    }
    fn show(&self, value: &Vec<Duration>) -> String {
        let steps: Vec<String> = value.iter().map(|d| d.as_secs().to_string()).collect();
        format!("[{}]", steps.join(", "))
    }
}

/// An optional URL (https, or http on a loopback host).
pub(crate) struct OptUrl {
    pub key: &'static str,
}

impl Kind for OptUrl {
    type Value = Option<Url>;
    fn key(&self) -> &'static str {
        self.key
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> Option<Url> {
        if node.is_present() {
            node.url(p, false)
        } else {
            None
        }
    }
    fn default_value(&self) -> Option<Url> {
        None
    }
    fn show(&self, value: &Option<Url>) -> String {
        value
            .as_ref()
            .map_or_else(|| "none".to_owned(), |u| u.as_str().to_owned())
    }
}

/// A directory path.
pub(crate) struct Dir {
    pub key: &'static str,
    pub default: &'static str,
}

impl Kind for Dir {
    type Value = PathBuf;
    fn key(&self) -> &'static str {
        self.key
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> PathBuf {
        node.opt_string(p)
            .map_or_else(|| self.default_value(), PathBuf::from)
    }
    fn default_value(&self) -> PathBuf {
        PathBuf::from(self.default)
    }
    fn show(&self, value: &PathBuf) -> String {
        value.display().to_string()
    }
}

/// A key whose value needs checks of its own (a file that must exist, a URL with a password
/// from the environment, a choice of words): its declaration names and documents it, and its
/// section's parser reads it at [`Custom::at`], so the name is written once.
pub(crate) struct Custom {
    /// Dotted below the section, e.g. `metrics.listen`.
    pub key: &'static str,
    /// The default as the reference shows it.
    pub default: &'static str,
}

impl Custom {
    pub(crate) fn at<'v>(&self, section: &Node<'v>) -> Node<'v> {
        section.at(self.key)
    }

    pub(crate) fn doc(&self, prefix: &str) -> KeyDoc {
        KeyDoc {
            key: join(prefix, self.key),
            default: self.default.to_owned(),
            doc: String::new(),
        }
    }
}

/// A section of keys, declared with [`section!`].
pub(crate) trait Section: Sized {
    /// Its key below its parent, e.g. `retry`.
    const KEY: &'static str;
    fn read(node: &Node<'_>, p: &mut Problems) -> Self;
    fn defaults() -> Self;
    /// Its keys, each with its own section's prefix.
    fn keys(prefix: &str) -> Vec<KeyDoc>;
    /// `key value, key value, …` for `check-config`.
    fn summary(&self) -> String;
}

/// A section as a key of its parent section.
pub(crate) struct Sub<T>(pub std::marker::PhantomData<T>);

impl<T: Section> Kind for Sub<T> {
    type Value = T;
    fn key(&self) -> &'static str {
        T::KEY
    }
    fn read(&self, node: &Node<'_>, p: &mut Problems) -> T {
        T::read(node, p)
    }
    fn default_value(&self) -> T {
        T::defaults()
    }
    fn show(&self, value: &T) -> String {
        format!("{{{}}}", value.summary())
    }
    fn docs(&self, prefix: &str, _doc: &str) -> Vec<KeyDoc> {
        T::keys(&join(prefix, T::KEY))
    }
}

/// Declares a settings section: a struct with one field per key, and the [`Section`] that
/// reads, defaults, documents and summarizes it from the one declaration of each key.
///
/// ```ignore
/// section! {
///     /// Extension `consumer.retry`.
///     pub struct RetryConfig at "retry" {
///         /// delivery attempts per destination before the alert is parked
///         pub max_attempts: u32 = Count { key: "maxAttempts", default: 5, min: 1, max: 100, as_type: narrow },
///     }
/// }
/// ```
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident at $section:literal $(check $check:path)? {
            $(
                $(#[doc = $doc:literal])*
                pub $field:ident : $ty:ty = $kind:expr
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $(
                $(#[doc = $doc])*
                pub $field: $ty,
            )*
        }

        impl $crate::settings::keys::Section for $name {
            const KEY: &'static str = $section;

            #[allow(unused_imports)]
            fn read(
                node: &$crate::settings::Node<'_>,
                p: &mut $crate::settings::Problems,
            ) -> Self {
                use $crate::settings::keys::Kind as _;
                node.expect_map(p, false);
                let value = Self {
                    $($field: ($kind).read(&node.child(($kind).key()), p),)*
                };
                $($check(&value, node, p);)?
                value
            }

            #[allow(unused_imports)]
            fn defaults() -> Self {
                use $crate::settings::keys::Kind as _;
                Self {
                    $($field: ($kind).default_value(),)*
                }
            }

            #[allow(unused_imports)]
            fn keys(prefix: &str) -> Vec<$crate::settings::keys::KeyDoc> {
                use $crate::settings::keys::Kind as _;
                let mut keys = Vec::new();
                $(
                    let doc: &[&str] = &[$($doc),*];
                    let doc = doc.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ");
                    keys.extend(($kind).docs(prefix, &doc));
                )*
                keys
            }

            #[allow(unused_imports)]
            fn summary(&self) -> String {
                use $crate::settings::keys::Kind as _;
                let parts: Vec<String> = vec![
                    $(format!("{} {}", ($kind).key(), ($kind).show(&self.$field)),)*
                ];
                parts.join(", ")
            }
        }

        impl Default for $name {
            fn default() -> Self {
                <Self as $crate::settings::keys::Section>::defaults()
            }
        }
    };
}

pub(crate) use section;

/// `Count::as_type` for a `u32` field (bounds keep it in range).
pub(crate) fn to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `Count::as_type` for a `usize` field (an amount of memory or of things held at once).
pub(crate) fn to_usize(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}
