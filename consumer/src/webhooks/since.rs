//! `--since 2h`: a duration of `<number><unit>` parts (`s`, `m`, `h`, `d`), e.g. `90m`, `1d12h`.

use std::time::Duration;

/// Qlik keeps webhook deliveries for 7 days; older ones cannot be resent.
pub const MAX_DELIVERY_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    #[error(
        "`{0}` is not a duration: use a number and a unit (s, m, h, d), e.g. 30m, 2h, 3d, 1d12h"
    )]
    Syntax(String),
    #[error("`{0}` is zero: nothing can be that recent")]
    Zero(String),
    #[error("`{0}` is longer than 7d: Qlik keeps webhook deliveries for 7 days")]
    TooLong(String),
}

/// Parses `--since`. At most [`MAX_DELIVERY_AGE`].
pub fn parse_since(text: &str) -> Result<Duration, SinceError> {
    let syntax = || SinceError::Syntax(text.to_owned());
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(syntax());
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in trimmed.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(syntax()),
        };
        if number.is_empty() {
            return Err(syntax());
        }
        let n: u64 = number.parse().map_err(|_| syntax())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| SinceError::TooLong(text.to_owned()))?;
        number.clear();
    }
    if !number.is_empty() {
        return Err(syntax());
    }
    let duration = Duration::from_secs(total);
    if duration.is_zero() {
        return Err(SinceError::Zero(text.to_owned()));
    }
    if duration > MAX_DELIVERY_AGE {
        return Err(SinceError::TooLong(text.to_owned()));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_since("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_since("90m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_since("1d12h"), Ok(Duration::from_secs(129_600)));
        assert_eq!(parse_since("7d"), Ok(MAX_DELIVERY_AGE));
        assert_eq!(parse_since(" 45s "), Ok(Duration::from_secs(45)));
        assert!(matches!(parse_since("8d"), Err(SinceError::TooLong(_))));
        assert!(matches!(
            parse_since("99999999999999999999d"),
            Err(SinceError::Syntax(_))
        ));
        assert!(matches!(
            parse_since("999999999999999d"),
            Err(SinceError::TooLong(_))
        ));
        assert!(matches!(parse_since("0h"), Err(SinceError::Zero(_))));
        for bad in ["", "2", "h", "2x", "2 h", "-2h", "1.5h"] {
            assert!(
                matches!(parse_since(bad), Err(SinceError::Syntax(_))),
                "{bad}"
            );
        }
    }
}
