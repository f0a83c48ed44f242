//! Keys Butler's alert blocks share (`enable`, `alertEnableByTag`, `rateLimit`,
//! `head/tailScriptLogLines`), read the same way wherever they appear.

use std::time::Duration;

use super::node::{Node, Problems};

/// The longest `rateLimit` (and the default MQTT session expiry): a week, as long as Qlik keeps
/// its webhook deliveries.
pub(crate) const WEEK_SECS: u64 = 7 * 24 * 3600;
/// Butler's default `rateLimit` for its alerts, in seconds.
pub(crate) const BUTLER_RATE_LIMIT_SECS: u64 = 300;
/// Butler's default `headScriptLogLines` / `tailScriptLogLines`.
pub(crate) const SCRIPT_LOG_LINES: u64 = 10;

/// Only an enabled block is validated: Butler lets disabled ones hold any value.
pub(crate) fn block_enabled(node: &Node<'_>, p: &mut Problems) -> bool {
    if !node.is_present() {
        return false;
    }
    if !node.expect_map(p, false) {
        return false;
    }
    node.child("enable").bool_or(p, false)
}

/// `rateLimit` seconds (at most a week), `default` when absent.
pub(crate) fn rate_limit(node: &Node<'_>, default: u64, p: &mut Problems) -> Duration {
    Duration::from_secs(node.child("rateLimit").u64_or(p, default, 0, WEEK_SECS))
}

/// `headScriptLogLines` / `tailScriptLogLines` (`key`).
pub(crate) fn script_log_lines(node: &Node<'_>, key: &str, p: &mut Problems) -> usize {
    // Fits in usize on every supported target: bounded to 100000 lines.
    node.child(key).u64_or(p, SCRIPT_LOG_LINES, 0, 100_000) as usize
}

/// `alertEnableByTag`: when enabled, only apps carrying `tag` get this alert.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlertEnableByTag {
    pub enable: bool,
    pub tag: String,
}

impl AlertEnableByTag {
    /// `alertEnableByTag` of an alert block.
    pub(crate) fn parse(block: &Node<'_>, p: &mut Problems) -> Self {
        let node = block.child("alertEnableByTag");
        let enable = node.child("enable").bool_or(p, false);
        let tag = if enable {
            node.child("tag").string(p).unwrap_or_default()
        } else {
            node.child("tag").opt_string(p).unwrap_or_default()
        };
        Self { enable, tag }
    }

    /// Whether an app with these tags should get the alert.
    pub fn allows(&self, app_tags: &[String]) -> bool {
        !self.enable || app_tags.iter().any(|t| t == &self.tag)
    }
}
