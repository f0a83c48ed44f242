//! JSON lines in Lambda (CloudWatch parses them), readable text elsewhere.

use std::io::Write;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::ConfigError;
use crate::env::var;

/// A log field whose value is a JSON object to merge into the root of the JSON line: how a
/// request line carries its CloudWatch EMF members (`_aws` must be an object at the root,
/// and tracing fields can only be strings and numbers).
pub const MERGE_FIELD: &str = "_emf";

/// Sets up logging; returns whether lines are JSON.
pub fn init(env: &dyn Fn(&str) -> Option<String>, in_lambda: bool) -> Result<bool, ConfigError> {
    let json = match var(env, "LOG_FORMAT").as_deref() {
        None => in_lambda,
        Some("json") => true,
        Some("text") => false,
        Some(other) => {
            return Err(ConfigError::new(
                "LOG_FORMAT",
                format!("`{other}` is not json or text"),
            ));
        }
    };
    // rumqttc logs every reconnect attempt at info, and the embedded development broker logs
    // each readiness probe as an error; the relay logs what matters itself.
    let filter = EnvFilter::try_new(
        var(env, "RUST_LOG").unwrap_or_else(|| "info,rumqttc=warn,rumqttd=off".to_owned()),
    )
    .map_err(|e| ConfigError::new("RUST_LOG", e.to_string()))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let result = if json {
        builder
            .with_writer(MergingStderr)
            .json()
            .flatten_event(true)
            // The Lambda runtime's span carries requestId: keep it on every line.
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .try_init()
    } else {
        builder
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    // Already initialized (tests): keep the first subscriber.
    let _ = result;
    Ok(json)
}

/// Standard error, with [`MERGE_FIELD`] merged into each JSON line that has it. tracing's
/// formatter hands over each line in one `write`.
struct MergingStderr;

impl<'a> MakeWriter<'a> for MergingStderr {
    type Writer = MergingStderr;

    fn make_writer(&'a self) -> Self::Writer {
        MergingStderr
    }
}

impl Write for MergingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match merge_line(buf) {
            Some(line) => std::io::stderr().lock().write_all(&line)?,
            None => std::io::stderr().lock().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// The JSON `line` with the object in its [`MERGE_FIELD`] string merged into its root, or
/// `None` to write it unchanged (no such field, or not JSON).
pub fn merge_line(line: &[u8]) -> Option<Vec<u8>> {
    let marker = format!("\"{MERGE_FIELD}\":");
    if !line.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        return None;
    }
    let mut root: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(line.trim_ascii_end()).ok()?;
    let serde_json::Value::String(text) = root.remove(MERGE_FIELD)? else {
        return None;
    };
    let serde_json::Value::Object(members) = serde_json::from_str(&text).ok()? else {
        return None;
    };
    root.extend(members);
    let mut merged = serde_json::to_vec(&root).ok()?;
    merged.push(b'\n');
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_field_becomes_members_of_the_root() {
        let line = br#"{"level":"INFO","outcome":"published","_emf":"{\"relayed\":1,\"_aws\":{\"Timestamp\":1}}"}"#;
        let merged = merge_line(&[line.as_slice(), b"\n"].concat()).unwrap();
        assert!(merged.ends_with(b"}\n"));
        let value: serde_json::Value = serde_json::from_slice(&merged).unwrap();
        assert_eq!(value["relayed"], 1);
        assert_eq!(value["_aws"]["Timestamp"], 1);
        assert_eq!(value["outcome"], "published");
        assert!(value.get(MERGE_FIELD).is_none());
    }

    #[test]
    fn other_lines_pass_unchanged() {
        assert_eq!(merge_line(br#"{"level":"INFO","message":"x"}"#), None);
        assert_eq!(merge_line(b"text with \"_emf\": but no JSON"), None);
        assert_eq!(merge_line(br#"{"_emf":"not an object"}"#), None);
    }
}
