//! relay-fn: verifies Qlik Cloud webhooks (`Qlik-Signature`) and republishes them to MQTT.
//!
//! Runs under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, otherwise as an HTTP
//! server on `LISTEN_ADDR`. Configuration: environment variables, see docs/relay.md.

use std::process::ExitCode;

use relay_fn::config::{ConfigError, RelayConfig};
use relay_fn::env::var;
use relay_fn::metrics::Emf;
use relay_fn::publisher::Publisher;
use relay_fn::service::Relay;
use relay_fn::{http_server, lambda, logging, secrets};

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

#[tokio::main]
async fn main() -> ExitCode {
    let in_lambda = var(&env, "AWS_LAMBDA_RUNTIME_API").is_some();
    let json_logs = match logging::init(&env, in_lambda) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // CloudWatch extracts EMF metrics from JSON log lines only.
    let metrics = (in_lambda && json_logs).then(|| Emf::from_env(&env));
    match run(in_lambda, metrics).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line that names the variable at fault: in Lambda it lands in CloudWatch as the
            // reason for the failed cold start, and is reported to the Runtime API as well.
            let message = format!("{e:#}");
            tracing::error!(error = %message, "relay cannot start");
            if let Some(api) = var(&env, "AWS_LAMBDA_RUNTIME_API") {
                lambda::report_init_error(&api, &message).await;
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(in_lambda: bool, metrics: Option<Emf>) -> anyhow::Result<()> {
    let secrets = secrets::resolve(&env).await?;
    let mut config = RelayConfig::from_env(&env, secrets)?;
    let broker = match config.broker.take() {
        Some(broker) => broker,
        None => embedded_broker(in_lambda)?,
    };
    tracing::info!(
        mode = if in_lambda { "lambda" } else { "http" },
        broker = %broker.display_url(),
        client_id = %broker.client_id,
        secrets = config.policy.secrets.len(),
        butler_compat = config.policy.butler_compat,
        max_event_age_s = config.policy.max_event_age.map(|age| age.as_secs()),
        cloudwatch_metrics = metrics.is_some(),
        "relay starting"
    );
    let publisher = Publisher::new(broker, config.publish_timeout);
    publisher.connect_early().await;
    let relay = Relay::with_metrics(config.policy, publisher, metrics);
    if in_lambda {
        lambda::run(relay)
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
    } else {
        http_server::serve(relay, config.listen_addr, config.http_limits).await
    }
}

#[cfg(feature = "embedded-broker")]
fn embedded_broker(in_lambda: bool) -> anyhow::Result<qlik_events::BrokerSettings> {
    if in_lambda {
        return Err(ConfigError::new("MQTT_URL", "not set (required in Lambda)").into());
    }
    let addr = var(&env, "EMBEDDED_MQTT_ADDR").unwrap_or_else(|| "127.0.0.1:11883".to_owned());
    let addr = addr.parse().map_err(|_| {
        ConfigError::new("EMBEDDED_MQTT_ADDR", format!("`{addr}` is not host:port"))
    })?;
    let broker = embedded_broker::start(Some(addr))
        .map_err(|e| ConfigError::new("EMBEDDED_MQTT_ADDR", e.to_string()))?;
    tracing::warn!(
        mqtt = %broker.v4, mqtt5 = %broker.v5,
        "MQTT_URL not set: started the embedded development broker (not for production)"
    );
    Ok(qlik_events::BrokerSettings::new(
        broker.v4.ip().to_string(),
        broker.v4.port(),
        relay_fn::config::unique_client_id(relay_fn::config::DEFAULT_CLIENT_ID_PREFIX),
    ))
}

#[cfg(not(feature = "embedded-broker"))]
fn embedded_broker(_in_lambda: bool) -> anyhow::Result<qlik_events::BrokerSettings> {
    Err(ConfigError::new(
        "MQTT_URL",
        "not set: give the broker URL, e.g. mqtts://relay@broker.example.com:8883 \
         (for local development, build with --features embedded-broker to start one in-process)",
    )
    .into())
}
