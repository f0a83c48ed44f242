//! What the HTTP destinations (Slack, Teams, webhooks) share: one client, one POST, one way of
//! telling a retryable failure from a final one. Errors name the destination by its masked URL:
//! incoming-webhook URLs carry their token in the path.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::{BuildError, SinkError};
use crate::config::SecretUrl;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn client() -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("qscloud-consumer/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))
}

/// POSTs `body` as JSON and maps the outcome: 2xx is delivered; 408, 429 and 5xx are worth
/// retrying; any other status is final.
pub async fn post_json(
    client: &reqwest::Client,
    url: &SecretUrl,
    body: &serde_json::Value,
    headers: &[(String, SecretString)],
    timeout: Duration,
) -> Result<(), SinkError> {
    let mut request = client
        .post(url.expose().clone())
        .json(body)
        .timeout(timeout);
    for (name, value) in headers {
        request = request.header(name.as_str(), value.expose_secret());
    }
    let response = request.send().await.map_err(|e| {
        // reqwest's error text includes the URL; rebuild it without.
        let kind = if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "connection failed"
        } else {
            "request failed"
        };
        SinkError::Transient(format!("POST {}: {kind}", url.masked()))
    })?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    // A short excerpt of the answer helps (Slack says `invalid_payload`, Teams says why).
    let text = response.text().await.unwrap_or_default();
    let excerpt: String = text.chars().take(200).collect();
    let message = format!("POST {}: HTTP {status}: {excerpt}", url.masked());
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(SinkError::Transient(message))
    } else {
        Err(SinkError::Permanent(message))
    }
}
