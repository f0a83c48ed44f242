//! Secrets from AWS Secrets Manager, resolved once at cold start.
//!
//! `WEBHOOK_SECRET_ARN` names a secret whose value is either the webhook secret list itself or
//! a JSON object `{"webhookSecret": "...", "mqttPassword": "...", "requiredHeaderValue": "...",
//! "mqttCaCert": "<PEM>", "mqttClientCert": "<PEM>", "mqttClientKey": "<PEM>"}` (only
//! `webhookSecret` required), so one secret can hold everything the relay needs, including the
//! device certificate AWS IoT Core requires.
//! `MQTT_PASSWORD_ARN` may name a separate secret holding only the broker password.

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use secrecy::SecretString;

use crate::config::{ConfigError, Secrets, secrets_from_env};
use crate::env::var;

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SecretDocument {
    webhook_secret: String,
    mqtt_password: Option<String>,
    required_header_value: Option<String>,
    /// PEM: a private CA to trust for the broker.
    mqtt_ca_cert: Option<String>,
    /// PEM: client certificate (chain) and key for mutual TLS (AWS IoT Core).
    mqtt_client_cert: Option<String>,
    mqtt_client_key: Option<String>,
}

/// Reads secrets from the environment, fetching those given as ARNs from Secrets Manager.
pub async fn resolve(env: &dyn Fn(&str) -> Option<String>) -> Result<Secrets, ConfigError> {
    let mut secrets = secrets_from_env(env);
    let secret_arn = var(env, "WEBHOOK_SECRET_ARN");
    let password_arn = var(env, "MQTT_PASSWORD_ARN");
    if secret_arn.is_none() && password_arn.is_none() {
        return Ok(secrets);
    }
    if secret_arn.is_some() && secrets.webhook_secret.is_some() {
        return Err(ConfigError::new(
            "WEBHOOK_SECRET_ARN",
            "both WEBHOOK_SECRET and WEBHOOK_SECRET_ARN are set; keep one",
        ));
    }
    if password_arn.is_some() && secrets.mqtt_password.is_some() {
        return Err(ConfigError::new(
            "MQTT_PASSWORD_ARN",
            "both MQTT_PASSWORD and MQTT_PASSWORD_ARN are set; keep one",
        ));
    }
    let sdk_config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk_config);
    if let Some(arn) = secret_arn {
        let value = fetch(&client, &arn, "WEBHOOK_SECRET_ARN").await?;
        if value.trim_start().starts_with('{') {
            let doc: SecretDocument = serde_json::from_str(&value).map_err(|e| {
                // serde's message names the field and position, never the value.
                ConfigError::new(
                    "WEBHOOK_SECRET_ARN",
                    format!(
                        "secret is JSON but not {{\"webhookSecret\", \"mqttPassword\"?, \"requiredHeaderValue\"?, \"mqttCaCert\"?, \"mqttClientCert\"?, \"mqttClientKey\"?}}: {}",
                        redact_serde(&e)
                    ),
                )
            })?;
            secrets.webhook_secret =
                Some((SecretString::from(doc.webhook_secret), "WEBHOOK_SECRET_ARN"));
            if let Some(password) = doc.mqtt_password {
                if secrets.mqtt_password.is_some() {
                    return Err(ConfigError::new(
                        "MQTT_PASSWORD",
                        "set, but the secret in WEBHOOK_SECRET_ARN also has mqttPassword; keep one",
                    ));
                }
                secrets.mqtt_password = Some(SecretString::from(password));
            }
            if let Some(value) = doc.required_header_value {
                secrets.required_header_value = Some(SecretString::from(value));
            }
            secrets.mqtt_ca_pem = doc.mqtt_ca_cert;
            secrets.mqtt_client_identity = match (doc.mqtt_client_cert, doc.mqtt_client_key) {
                (None, None) => None,
                (Some(certificate), Some(key)) => Some(qlik_events::ClientIdentityPem {
                    certificate,
                    key: SecretString::from(key),
                }),
                _ => {
                    return Err(ConfigError::new(
                        "WEBHOOK_SECRET_ARN",
                        "the secret has only one of mqttClientCert and mqttClientKey; mutual TLS needs both",
                    ));
                }
            };
        } else {
            secrets.webhook_secret = Some((SecretString::from(value), "WEBHOOK_SECRET_ARN"));
        }
    }
    if let Some(arn) = password_arn {
        let value = fetch(&client, &arn, "MQTT_PASSWORD_ARN").await?;
        secrets.mqtt_password = Some(SecretString::from(value));
    }
    Ok(secrets)
}

/// serde_json errors may quote input for some error kinds (invalid type: string "…"); keep
/// the message only for unknown or missing fields, which name keys, never values.
fn redact_serde(e: &serde_json::Error) -> String {
    let message = e.to_string();
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        return message;
    }
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
    .to_lowercase()
}

async fn fetch(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
    variable: &'static str,
) -> Result<String, ConfigError> {
    let output = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| {
            let kind = e.code().unwrap_or("request failed").to_owned();
            let detail = e
                .message()
                .map(str::to_owned)
                .unwrap_or_else(|| aws_smithy_error_chain(&e));
            let problem =
                format!("cannot read secret {arn} from Secrets Manager: {kind}: {detail}");
            // Without an answer from the service (timeout, DNS, throttling) the ARN may be
            // right; an answer (AccessDenied, ResourceNotFound) says the setting is wrong.
            if e.code().is_none() || kind.contains("Throttling") || kind.contains("InternalService")
            {
                ConfigError::transient(variable, problem)
            } else {
                ConfigError::new(variable, problem)
            }
        })?;
    match output.secret_string {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(_) => Err(ConfigError::new(variable, format!("secret {arn} is empty"))),
        None => Err(ConfigError::new(
            variable,
            format!("secret {arn} has no SecretString (binary secrets are not supported)"),
        )),
    }
}

fn aws_smithy_error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.join(": ")
}
