//! The webhook secret: Qlik signs each delivery with it (`Qlik-Signature`, HMAC-SHA256) and the
//! relay checks that signature. Messages here describe the secret, never quote it.

/// Why a secret is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    #[error("no webhook secret given")]
    Empty,
    #[error("the webhook secret must be 32 to 64 characters long (Qlik's rule); it has {0}")]
    Length(usize),
    #[error(
        "the webhook secret contains a comma: the relay reads WEBHOOK_SECRET as a comma-separated list \
         (several secrets during rotation), so put the one secret Qlik should use in its own variable \
         and pass --secret-env NAME"
    )]
    Comma,
    #[error("the webhook secret starts or ends with white space")]
    Whitespace,
    #[error("the webhook secret contains control characters")]
    Control,
}

/// Checks a secret against Qlik's rule (32–64 characters) and the relay's (no commas: its
/// `WEBHOOK_SECRET` lists several separated by commas).
pub fn validate_secret(secret: &str) -> Result<(), SecretProblem> {
    if secret.is_empty() {
        return Err(SecretProblem::Empty);
    }
    if secret.contains(',') {
        return Err(SecretProblem::Comma);
    }
    if secret.trim() != secret {
        return Err(SecretProblem::Whitespace);
    }
    if secret.chars().any(char::is_control) {
        return Err(SecretProblem::Control);
    }
    let n = secret.chars().count();
    if !(32..=64).contains(&n) {
        return Err(SecretProblem::Length(n));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert_eq!(validate_secret(&"a".repeat(32)), Ok(()));
        assert_eq!(validate_secret(&"é".repeat(64)), Ok(()));
        assert_eq!(
            validate_secret(&"a".repeat(31)),
            Err(SecretProblem::Length(31))
        );
        assert_eq!(
            validate_secret(&"a".repeat(65)),
            Err(SecretProblem::Length(65))
        );
        assert_eq!(validate_secret(""), Err(SecretProblem::Empty));
        let rotation = format!("{},{}", "a".repeat(32), "b".repeat(32));
        assert_eq!(validate_secret(&rotation), Err(SecretProblem::Comma));
        assert_eq!(
            validate_secret(&format!(" {}", "a".repeat(40))),
            Err(SecretProblem::Whitespace)
        );
        assert_eq!(
            validate_secret(&format!("{}\u{7}b", "a".repeat(40))),
            Err(SecretProblem::Control)
        );
        // Never quoted.
        let long = "z".repeat(70);
        assert!(
            !validate_secret(&long)
                .unwrap_err()
                .to_string()
                .contains(&long)
        );
    }
}
