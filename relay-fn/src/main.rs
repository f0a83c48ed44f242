//! relay-fn: verifies Qlik Cloud webhooks (`Qlik-Signature`) and republishes them to MQTT.
//!
//! Runs under the Lambda runtime when `AWS_LAMBDA_RUNTIME_API` is set, otherwise as an HTTP
//! server on `LISTEN_ADDR`. Configuration: environment variables, see docs/relay.md.

use std::process::ExitCode;

use clap::Parser;
use relay_fn::config::{ConfigError, RelayConfig};
use relay_fn::env::var;
use relay_fn::metrics::Emf;
use relay_fn::publisher::Publisher;
use relay_fn::service::Relay;
use relay_fn::{http_server, lambda, logging, secrets};

const AFTER_HELP: &str = "\
Modes:
  Lambda when AWS_LAMBDA_RUNTIME_API is set (the runtime passes no arguments), otherwise an HTTP
  server: POST / on LISTEN_ADDR, GET /healthz (200 while the broker connection is up, else 503)
  and GET /metrics (Prometheus text), those two on METRICS_LISTEN_ADDR instead when it is set.

Environment (see docs/relay.md for defaults and ranges):
  WEBHOOK_SECRET            Qlik webhook secret(s), comma-separated during a rotation
  WEBHOOK_SECRET_ARN        instead: a Secrets Manager secret (plain, or JSON with webhookSecret,
                            mqttPassword, requiredHeaderValue, mqttCaCert, mqttClientCert, mqttClientKey)
  MQTT_URL                  broker, mqtt://[user@]host[:1883] or mqtts://[user@]host[:8883]
  MQTT_PASSWORD             broker password
  MQTT_PASSWORD_ARN         instead: a Secrets Manager secret holding only the password
  MQTT_CA_FILE              PEM CA certificate(s) for mqtts://
  MQTT_CLIENT_CERT_FILE     PEM client certificate for mutual TLS
  MQTT_CLIENT_KEY_FILE      PEM client key for mutual TLS
  MQTT_CLIENT_ID            client id prefix (default qlik-relay; a unique suffix is added)
  MQTT_TOPIC_ROOT           root of the default topic scheme (default qscloud)
  MQTT_TOPIC_TEMPLATE       topic for every event, e.g. qlik/{tenantId}/{type}/{status}
  MQTT_ALLOW_PLAINTEXT      true: allow mqtt:// with a user name to a non-loopback host
  PUBLISH_TIMEOUT_MS        wait for one PUBACK (default 5000)
  BUTLER_COMPAT             true: add the legacy fields Butler 16 reads
  MAX_BODY_BYTES            largest accepted body (default 262144)
  ALLOWED_TENANTS           comma-separated tenant ids; others get 403
  MAX_EVENT_AGE_SECS        refuse older events (default 691200, 8 days; 0: off)
  REQUIRED_HEADER_NAME      a custom header every request must carry...
  REQUIRED_HEADER_VALUE     ...with this value
  LISTEN_ADDR               HTTP mode: where to listen (default 127.0.0.1:8080)
  METRICS_LISTEN_ADDR       HTTP mode: serve /healthz and /metrics here, not on LISTEN_ADDR
  HTTP_HEADER_TIMEOUT_SECS  HTTP mode: headers deadline (default 10)
  HTTP_BODY_TIMEOUT_SECS    HTTP mode: body deadline (default 30)
  HTTP_IDLE_TIMEOUT_SECS    HTTP mode: keep-alive idle limit (default 60)
  HTTP_MAX_CONNECTIONS      HTTP mode: connections served at once (default 1024)
  LOG_FORMAT                json or text (default json in Lambda, text elsewhere)
  RUST_LOG                  log filter (default info,rumqttc=warn,rumqttd=off)
  EMBEDDED_MQTT_ADDR        builds with --features embedded-broker: the in-process broker's address

Exit codes:
  0   stopped by SIGTERM/SIGINT (HTTP mode); --help, --version
  1   cannot start for a reason a later start may not have: a listen address is taken,
      Secrets Manager does not answer
  2   command-line usage error, or LOG_FORMAT/RUST_LOG invalid
  78  a setting is missing or wrong (the log line names the variable): starting again will not
      help (the service unit's RestartPreventExitStatus=78)";

/// sysexits.h EX_CONFIG, as the consumer uses it.
const EXIT_CONFIG: u8 = 78;

/// Settings come from the environment (Lambda passes no arguments); the command line only
/// answers --help and --version.
#[derive(Parser)]
#[command(
    name = "relay-fn",
    version,
    about = "Verifies Qlik Cloud webhooks (Qlik-Signature) and republishes them to MQTT",
    long_about = "Verifies the Qlik-Signature HMAC of each Qlik Cloud webhook, checks its size, \
envelope, tenant and age, publishes it to an MQTT broker with QoS 1 and answers 200 only once the \
broker acknowledged that very message (503 otherwise, so Qlik can resend it). Runs under AWS \
Lambda or as a plain HTTP server; configured by environment variables.",
    after_help = AFTER_HELP
)]
struct Cli {}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

fn main() -> ExitCode {
    // Before the runtime and the environment: --version answers even with everything set.
    Cli::parse();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(start()),
        Err(e) => {
            eprintln!("relay-fn: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start() -> ExitCode {
    let in_lambda = var(&env, "AWS_LAMBDA_RUNTIME_API").is_some();
    let json_logs = match logging::init(&env, in_lambda) {
        Ok(json) => json,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if in_lambda {
        tracing::info!(
            version = VERSION,
            mode = "lambda",
            "relay-fn {VERSION} starting"
        );
    } else {
        // The raw values: a wrong one is reported, naming its variable, once parsed below.
        tracing::info!(
            version = VERSION,
            mode = "http",
            listen = %var(&env, "LISTEN_ADDR").unwrap_or_else(|| relay_fn::config::DEFAULT_LISTEN_ADDR.to_owned()),
            metrics_listen = var(&env, "METRICS_LISTEN_ADDR").as_deref(),
            "relay-fn {VERSION} starting"
        );
    }
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
            match e.downcast_ref::<ConfigError>() {
                Some(config) if !config.transient => ExitCode::from(EXIT_CONFIG),
                _ => ExitCode::FAILURE,
            }
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
        "relay configured"
    );
    let publisher = Publisher::new(broker, config.publish_timeout);
    if in_lambda {
        // HTTP mode's server keeps the connection up itself (Publisher::keep_connected).
        publisher.connect_early().await;
    }
    let relay = Relay::with_metrics(config.policy, publisher, metrics);
    if in_lambda {
        lambda::run(relay)
            .await
            .map_err(|e| anyhow::anyhow!("Lambda runtime: {e}"))
    } else {
        let listen = http_server::Listen {
            webhook: config.listen_addr,
            operations: config.metrics_listen_addr,
        };
        http_server::serve(relay, listen, config.http_limits).await
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
