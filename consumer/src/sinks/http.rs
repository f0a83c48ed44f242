//! What the HTTP destinations (Slack, Teams, webhooks) share: one client, one POST, one way of
//! telling a retryable failure from a final one. Errors name the destination by its masked URL:
//! incoming-webhook URLs carry their token in the path.
//!
//! Redirects are never followed. reqwest's default would turn a 302 into a body-less GET whose
//! 200 looks like a delivery (the alert is lost) and would send the configured secret headers
//! to the redirect target. A 3xx is a failed delivery instead: retried, then parked.

use std::time::Duration;

use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::{BuildError, SinkError};
use crate::settings::SecretUrl;

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn client() -> Result<reqwest::Client, BuildError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("qscloud-consumer/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| BuildError::Http(e.to_string()))
}

/// POSTs `body` as JSON and maps the outcome: 2xx is delivered; 3xx (not followed: see the
/// module comment), 408, 429 and 5xx are worth retrying (a moved endpoint may be put back, and
/// the alert is parked if it is not); any other status is final.
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
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(retry_after);
    // A short excerpt of the answer helps (Slack says `invalid_payload`, Teams says why).
    let text = response.text().await.unwrap_or_default();
    let excerpt: String = text.chars().take(200).collect();
    let mut message = format!("POST {}: HTTP {status}: {excerpt}", url.masked());
    if status.is_redirection() {
        // The target is not shown: it may carry a token as the configured URL does.
        message.push_str(" (redirect not followed: configure the final URL)");
        return Err(SinkError::Transient(message));
    }
    if let Some(retry_after) = retry_after.filter(|_| {
        status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
    }) {
        return Err(SinkError::Throttled {
            message,
            retry_after,
        });
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(SinkError::Transient(message))
    } else {
        Err(SinkError::Permanent(message))
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 10.2.3); `None` when it is neither.
pub fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let wait = at - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(wait).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::http::{HeaderMap, Method};
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::any;

    use super::*;

    /// What the test server saw: method, path and whether the secret header came along.
    type Seen = Arc<Mutex<Vec<(Method, String, bool)>>>;

    async fn server() -> (String, Seen) {
        let seen: Seen = Arc::default();
        let record = |seen: Seen| {
            move |method: Method, uri: axum::http::Uri, headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let secret = headers.contains_key("x-secret");
                    if let Ok(mut seen) = seen.lock() {
                        seen.push((method, uri.path().to_owned(), secret));
                    }
                    if uri.path() == "/moved" {
                        Redirect::to("/elsewhere").into_response()
                    } else {
                        "ok".into_response()
                    }
                }
            }
        };
        let app = Router::new()
            .route("/moved", any(record(seen.clone())))
            .route("/elsewhere", any(record(seen.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), seen)
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after(" 0 "), Some(Duration::ZERO));
        assert_eq!(
            retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past: go now"
        );
        assert_eq!(retry_after("soon"), None);
        assert_eq!(retry_after("-3"), None);
    }

    #[tokio::test]
    async fn a_redirect_is_a_failed_delivery_and_is_not_followed() {
        let (base, seen) = server().await;
        let url = SecretUrl::new(url::Url::parse(&format!("{base}/moved")).expect("url"));
        let headers = [("X-Secret".to_owned(), SecretString::from("s3cret"))];
        let client = client().expect("client");
        let result = post_json(
            &client,
            &url,
            &serde_json::json!({"a": 1}),
            &headers,
            DEFAULT_TIMEOUT,
        )
        .await;
        let error = result.expect_err("a 303 must not count as delivered");
        assert!(error.is_transient(), "{error}");
        assert!(error.to_string().contains("redirect"), "{error}");
        let seen = seen.lock().expect("lock").clone();
        assert_eq!(seen, [(Method::POST, "/moved".to_owned(), true)]);
    }
}
