//! How a failed webhook API call is told to a person: what was being done, Qlik's own error
//! details (`errors[].title/detail/code`, `traceId`), and what to check for 401 and 403.

use std::fmt::Write as _;

use reqwest::StatusCode;
use serde::Deserialize;

use crate::tenant_api::ApiError;

/// One entry of Qlik's error body `{"errors": [{"code", "title", "detail", "status"}], "traceId"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct QlikError {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<QlikError>,
    #[serde(default, rename = "traceId")]
    trace_id: Option<String>,
}

/// What kind of failure, for exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookErrorKind {
    /// 404: no such webhook or delivery.
    NotFound,
    /// 401: the tenant did not accept the JWT.
    Unauthorized,
    /// 403: the JWT's user lacks the rights.
    Forbidden,
    /// 400, 409, 422: Qlik refused the request as invalid (its message says why).
    Rejected,
    /// Anything else: unreachable, timeouts, 5xx after retries, an unexpected answer.
    Other,
}

/// A failed webhook API call. Never contains the JWT (only ever sent in a header marked
/// sensitive) or the webhook secret (only ever in a request body, never quoted).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    #[error("{what}: {}", status_message(*.status, .errors, .excerpt.as_deref(), .trace_id.as_deref(), *.attempts))]
    Status {
        what: String,
        status: u16,
        errors: Vec<QlikError>,
        /// The start of a body that was not Qlik's error JSON.
        excerpt: Option<String>,
        trace_id: Option<String>,
        attempts: u32,
    },
    #[error("{what}: no answer within the timeout after {attempts} attempt(s)")]
    Timeout { what: String, attempts: u32 },
    #[error("{what}: request failed after {attempts} attempt(s): {message}")]
    Transport {
        what: String,
        attempts: u32,
        message: String,
    },
    #[error("{what}: unexpected answer: {message}")]
    Body { what: String, message: String },
    #[error(
        "{what}: the next-page link leads away from the tenant ({origin}); not followed, so the JWT is not sent there"
    )]
    ForeignLink { what: String, origin: String },
    #[error("cannot set up the tenant API client: {0}")]
    Client(String),
}

impl WebhookError {
    pub fn kind(&self) -> WebhookErrorKind {
        match self {
            WebhookError::Status { status, .. } => match status {
                404 => WebhookErrorKind::NotFound,
                401 => WebhookErrorKind::Unauthorized,
                403 => WebhookErrorKind::Forbidden,
                400 | 409 | 422 => WebhookErrorKind::Rejected,
                _ => WebhookErrorKind::Other,
            },
            _ => WebhookErrorKind::Other,
        }
    }

    /// The HTTP status, when the tenant answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            WebhookError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn status_message(
    status: u16,
    errors: &[QlikError],
    excerpt: Option<&str>,
    trace_id: Option<&str>,
    attempts: u32,
) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("");
    let mut out = format!("HTTP {status} {reason}").trim_end().to_owned();
    let details: Vec<String> = errors
        .iter()
        .map(|e| {
            let mut one = String::new();
            // A title that only repeats the reason phrase adds nothing.
            if let Some(title) = e
                .title
                .as_deref()
                .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case(reason))
            {
                one.push_str(title);
            }
            if let Some(detail) = e
                .detail
                .as_deref()
                .filter(|d| !d.is_empty() && e.title.as_deref() != Some(*d))
            {
                if !one.is_empty() {
                    one.push_str(": ");
                }
                one.push_str(detail);
            }
            if let Some(code) = e.code.as_deref().filter(|c| !c.is_empty()) {
                if one.is_empty() {
                    let _ = write!(one, "(code {code})");
                } else {
                    let _ = write!(one, " (code {code})");
                }
            }
            one
        })
        .filter(|s| !s.is_empty())
        .collect();
    if !details.is_empty() {
        let sep = if details.iter().all(|d| d.starts_with("(code ")) {
            " "
        } else {
            ": "
        };
        let _ = write!(out, "{sep}{}", details.join("; "));
    } else if let Some(excerpt) = excerpt {
        let _ = write!(out, ": {excerpt}");
    }
    match status {
        401 => out.push_str(
            ". The tenant did not accept the JWT (expired, revoked, or issued for another tenant): \
             check auth.jwt.token or QLIK_TENANT_JWT / QLIK_TENANT_JWT_<TENANTID>",
        ),
        403 => out.push_str(
            ". The JWT was accepted but its user lacks the rights for this: managing tenant-level \
             webhooks needs the TenantAdmin role (or create a user-level webhook with --level user)",
        ),
        429 | 500..=599 if attempts > 1 => {
            let _ = write!(
                out,
                " (after {attempts} attempts; the tenant API is busy or failing: try again later)"
            );
        }
        _ => {}
    }
    if let Some(trace) = trace_id {
        let _ = write!(out, " [traceId {trace}]");
    }
    out
}

impl WebhookError {
    /// `error` of the tenant API client, told as a failure of `what`.
    pub(super) fn from_api(what: &str, error: ApiError) -> Self {
        let what = what.to_owned();
        match error {
            ApiError::Status {
                status,
                attempts,
                body,
            } => status_error(&what, status, &body, attempts),
            ApiError::Timeout { attempts } => WebhookError::Timeout { what, attempts },
            ApiError::Transport { attempts, message } => WebhookError::Transport {
                what,
                attempts,
                message,
            },
            ApiError::TooLarge { limit } => WebhookError::Body {
                what,
                message: format!("response larger than {limit} bytes"),
            },
            ApiError::Body(message) => WebhookError::Body { what, message },
            ApiError::Client(message) => WebhookError::Client(message),
        }
    }
}

fn status_error(what: &str, status: u16, body: &str, attempts: u32) -> WebhookError {
    let parsed: Option<ErrorBody> = serde_json::from_str(body).ok();
    let (errors, trace_id) = match parsed {
        Some(b) => (b.errors, b.trace_id),
        None => (Vec::new(), None),
    };
    let excerpt = if errors.is_empty() && !body.is_empty() {
        let text: String = body
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(200)
            .collect();
        Some(text.trim().to_owned()).filter(|t| !t.is_empty())
    } else {
        None
    };
    WebhookError::Status {
        what: what.to_owned(),
        status,
        errors,
        excerpt,
        trace_id,
        attempts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qlik_errors_are_spelled_out() {
        let body = r#"{"errors":[{"code":"WEBHOOK-9","title":"Invalid filter","detail":"data.status cannot be combined","status":"400"}],"traceId":"abc"}"#;
        let e = status_error("creating webhook \"x\"", 400, body, 1);
        assert_eq!(
            e.to_string(),
            "creating webhook \"x\": HTTP 400 Bad Request: Invalid filter: data.status cannot be combined (code WEBHOOK-9) [traceId abc]"
        );
        assert_eq!(e.kind(), WebhookErrorKind::Rejected);
        let forbidden = r#"{"errors":[{"code":"HTTP-403","title":"Forbidden","status":"403"}]}"#;
        let e = status_error("listing webhooks", 403, forbidden, 1);
        assert!(
            e.to_string()
                .starts_with("listing webhooks: HTTP 403 Forbidden (code HTTP-403). The JWT"),
            "{e}"
        );
        assert!(e.to_string().contains("TenantAdmin"), "{e}");
        assert_eq!(e.kind(), WebhookErrorKind::Forbidden);
        let e = status_error("x", 502, "<html>\n<b>bad</b></html>", 4);
        assert!(e.to_string().contains("<html> <b>bad</b></html>"), "{e}");
        assert!(e.to_string().contains("after 4 attempts"), "{e}");
    }

    #[test]
    fn transport_failures_keep_what_was_being_done() {
        let e = WebhookError::from_api("listing webhooks", ApiError::TooLarge { limit: 10 });
        assert_eq!(
            e.to_string(),
            "listing webhooks: unexpected answer: response larger than 10 bytes"
        );
        let e = WebhookError::from_api("listing webhooks", ApiError::Timeout { attempts: 3 });
        assert_eq!(
            e.to_string(),
            "listing webhooks: no answer within the timeout after 3 attempt(s)"
        );
        assert_eq!(e.kind(), WebhookErrorKind::Other);
    }
}
