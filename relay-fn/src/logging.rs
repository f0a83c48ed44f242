//! JSON lines in Lambda (CloudWatch parses them), readable text elsewhere.

use tracing_subscriber::EnvFilter;

use crate::config::{ConfigError, var};

pub fn init(env: &dyn Fn(&str) -> Option<String>, in_lambda: bool) -> Result<(), ConfigError> {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = if json {
        builder
            .json()
            .flatten_event(true)
            // The Lambda runtime's span carries requestId: keep it on every line.
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .try_init()
    } else {
        builder
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init()
    };
    // Already initialized (tests): keep the first subscriber.
    let _ = result;
    Ok(())
}
