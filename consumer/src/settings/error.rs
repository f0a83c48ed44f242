//! Configuration problems, each tied to the dotted key path at fault.

use std::fmt;

/// One problem: the dotted key path (or file) and what is wrong with it. Never holds a secret
/// value: messages describe, they do not quote secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// E.g. `Butler.qlikSenseCloud.event.mqtt.tenant.tenantUrl`, or a file path for I/O and
    /// YAML syntax errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found while loading, not just the first, so one `check-config` run shows
/// everything to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors {
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// Whether some problem concerns exactly this key path.
    pub fn has(&self, path: &str) -> bool {
        self.problems.iter().any(|p| p.path == path)
    }

    /// The message for a key path, if there is one.
    pub fn message_for(&self, path: &str) -> Option<&str> {
        self.problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.as_str())
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        write!(
            f,
            "{n} configuration problem{}",
            if n == 1 { "" } else { "s" }
        )?;
        for problem in &self.problems {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}
