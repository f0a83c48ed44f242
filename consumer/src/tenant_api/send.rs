//! One call with bounded retries. GET, DELETE and PATCH are idempotent and retried on 408, 429,
//! 5xx, timeouts and connection errors; POST (creates, resends) only on 429 and when the
//! connection could not be made, so that a request the tenant may have carried out is not
//! repeated. The server's `Retry-After` sets the pause when it sent one.

use std::time::Duration;

use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use url::Url;

use super::body::{self, Body, Overflow, ReadError};
use super::{ApiError, TenantClient};

/// JSON answers are small; anything bigger is not what we asked for.
const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;
/// Of an error answer only the start is quoted (Qlik's `errors` JSON is far smaller).
const MAX_ERROR_BYTES: usize = 64 * 1024;

/// One request to the tenant API: what to send and how much of the answer to take.
#[derive(Debug, Clone)]
pub struct Call {
    method: Method,
    url: Url,
    accept: &'static str,
    json: Option<Vec<u8>>,
    limit: usize,
    overflow: Overflow,
}

impl Call {
    /// A request for JSON, refusing answers over 4 MiB.
    pub fn new(method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            accept: "application/json",
            json: None,
            limit: MAX_JSON_BYTES,
            overflow: Overflow::Refuse,
        }
    }

    /// Another `Accept` type.
    pub fn accept(mut self, accept: &'static str) -> Self {
        self.accept = accept;
        self
    }

    /// A JSON request body, already serialized.
    pub fn json(mut self, body: Vec<u8>) -> Self {
        self.json = Some(body);
        self
    }

    /// At most `limit` bytes of the answer, and what to keep of a longer one.
    pub fn limit(mut self, limit: usize, overflow: Overflow) -> Self {
        self.limit = limit;
        self.overflow = overflow;
        self
    }
}

impl TenantClient {
    /// Sends `call`, retrying as the module documentation says; the body of a successful
    /// answer, or why there is none.
    pub async fn send(&self, call: Call) -> Result<Body, ApiError> {
        let idempotent = call.method != Method::POST;
        let max_attempts = self.settings.max_retries + 1;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut request = self
                .request(call.method.clone(), call.url.clone())
                .header(ACCEPT, call.accept);
            if let Some(bytes) = &call.json {
                request = request
                    .header(CONTENT_TYPE, "application/json")
                    .body(bytes.clone());
            }
            let sent = request.send().await;
            crate::metrics::global().tenant_api(sent.as_ref().ok().map(|r| r.status().as_u16()));
            let (error, retry_after, may_retry) = match sent {
                Ok(response) if response.status().is_success() => {
                    match body::read(response, call.limit, call.overflow).await {
                        Ok(body) => return Ok(body),
                        Err(ReadError::TooLarge) => {
                            return Err(ApiError::TooLarge { limit: call.limit });
                        }
                        Err(ReadError::Http(e)) => {
                            (ApiError::transport(e, attempt), None, idempotent)
                        }
                    }
                }
                Ok(response) => {
                    let status = response.status();
                    let after = retry_after(response.headers());
                    // The body only explains the status; when it cannot be read, the status
                    // alone still does.
                    let body = body::read(response, MAX_ERROR_BYTES, Overflow::KeepHead)
                        .await
                        .map(|b| String::from_utf8_lossy(&b.bytes).into_owned())
                        .unwrap_or_default();
                    let error = ApiError::Status {
                        status: status.as_u16(),
                        attempts: attempt,
                        body,
                    };
                    let may_retry = retryable(status)
                        && (idempotent || status == StatusCode::TOO_MANY_REQUESTS);
                    (error, after, may_retry)
                }
                Err(e) => {
                    let connect = e.is_connect();
                    (ApiError::transport(e, attempt), None, idempotent || connect)
                }
            };
            if !may_retry || attempt >= max_attempts {
                return Err(error);
            }
            let delay = self.retry_delay(attempt, retry_after);
            tracing::debug!(
                tenant = %self.tenant_id,
                method = %call.method,
                path = call.url.path(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "tenant API call failed, retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// GET `url` and parse the JSON answer.
    pub async fn get_json<T: serde::de::DeserializeOwned>(&self, url: Url) -> Result<T, ApiError> {
        let body = self.send(Call::new(Method::GET, url)).await?;
        serde_json::from_slice(&body.bytes)
            .map_err(|e| ApiError::Body(format!("not the expected JSON: {e}")))
    }
}

/// Statuses that may go away when asked again.
fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || matches!(status.as_u16(), 500 | 502 | 503 | 504)
}

/// `Retry-After` as seconds or as an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc2822).ok()?;
    let delta = when - time::OffsetDateTime::now_utc();
    Some(Duration::try_from(delta).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use reqwest::header::HeaderValue;

    use super::*;

    #[test]
    fn retry_after_seconds_and_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::ZERO));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn only_statuses_that_may_pass_are_retried() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                retryable(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 409, 422, 501] {
            assert!(
                !retryable(StatusCode::from_u16(code).expect("status")),
                "{code}"
            );
        }
    }
}
