//! Reading one environment variable, shared by the settings ([`crate::config`]), the logging
//! set-up and the metrics. A leaf: it imports nothing from the relay.

/// Reads one variable; empty values count as unset (SAM passes "" for blank parameters).
pub fn var(env: &dyn Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    env(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_and_whitespace_values_count_as_unset() {
        let env = |name: &str| match name {
            "EMPTY" => Some(String::new()),
            "SPACES" => Some("   ".to_owned()),
            "PADDED" => Some("  value ".to_owned()),
            _ => None,
        };
        assert_eq!(var(&env, "EMPTY"), None);
        assert_eq!(var(&env, "SPACES"), None);
        assert_eq!(var(&env, "MISSING"), None);
        assert_eq!(var(&env, "PADDED").as_deref(), Some("value"));
    }
}
