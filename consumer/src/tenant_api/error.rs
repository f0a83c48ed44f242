//! Why a tenant API call gave nothing. Never contains the JWT: requests carry it only in a
//! header marked sensitive, and no message quotes headers.

/// A failed tenant API call. Callers that speak to a person ([`crate::webhooks`]) rephrase it
/// with what they were doing; enrichment lists it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("HTTP {status} after {attempts} attempt(s){}", status_hint(*.status))]
    Status {
        status: u16,
        attempts: u32,
        /// The start of the answer's body (Qlik's `errors` JSON, or whatever else came back).
        body: String,
    },
    #[error("timed out after {attempts} attempt(s)")]
    Timeout { attempts: u32 },
    #[error("request failed after {attempts} attempt(s): {message}")]
    Transport { attempts: u32, message: String },
    #[error("unexpected response: response larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unexpected response: {0}")]
    Body(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

fn status_hint(status: u16) -> &'static str {
    match status {
        401 => " (the tenant rejected the JWT: check auth.jwt.token / QLIK_TENANT_JWT)",
        403 => " (the JWT's user lacks permission for this resource)",
        404 => " (not found)",
        _ => "",
    }
}

impl ApiError {
    /// A failure to send or to read the answer, named by its innermost cause.
    pub(super) fn transport(e: reqwest::Error, attempts: u32) -> Self {
        if e.is_timeout() {
            ApiError::Timeout { attempts }
        } else {
            ApiError::Transport {
                attempts,
                message: cause(e),
            }
        }
    }
}

/// reqwest's own message ("error sending request") hides the cause; an operator needs the
/// innermost one (connection refused, DNS, TLS). The URL is dropped: ids in paths are noise and
/// the caller says what it was doing. Neither the error nor its sources carry headers, so the
/// JWT cannot leak through here.
fn cause(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        let text = inner.to_string();
        // hyper and std often repeat their source in their own message.
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = inner.source();
    }
    reason
}
