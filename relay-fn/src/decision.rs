//! The relay's decision, as a pure function: given a request and the policy, either reject it
//! with a status and a reason, or say what to publish where. No I/O here, so every path is
//! unit-tested directly; Lambda, the HTTP server and the MQTT publisher are adapters around it.

use std::collections::HashSet;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use qlik_events::{
    Envelope, EnvelopeError, EnvelopeFormat, SIGNATURE_HEADER, SignatureError, TopicRouting,
    VerifiedBody, WebhookSecrets, secret_value_eq, with_legacy_fields,
};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;

/// Default body limit: Qlik's events are a few KiB; 256 KiB leaves room for large error lists.
pub const DEFAULT_MAX_BODY_BYTES: usize = 256 * 1024;

/// The largest `MAX_BODY_BYTES` accepted: the MQTT packet limit less 64 KiB for the topic and
/// the fields `BUTLER_COMPAT` adds. A larger body could be signed and valid and still never
/// reach the broker, and Qlik would be told to retry it (503) for nothing.
pub const MAX_MAX_BODY_BYTES: usize = qlik_events::MAX_PACKET_BYTES - 64 * 1024;

/// A custom header the Qlik admin configured on the webhook (Qlik can send it encrypted at rest)
/// that every request must carry with this exact value: a second factor beside the HMAC.
#[derive(Clone)]
pub struct RequiredHeader {
    pub name: http::HeaderName,
    pub value: SecretString,
}

impl std::fmt::Debug for RequiredHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RequiredHeader({}: ***)", self.name)
    }
}

/// Everything the decision depends on besides the request itself.
#[derive(Debug, Clone)]
pub struct Policy {
    pub secrets: WebhookSecrets,
    pub max_body_bytes: usize,
    /// `None`: every tenant is accepted.
    pub allowed_tenants: Option<HashSet<String>>,
    /// `None`: events of any age are accepted. The default (8 days) lets Qlik's resends of
    /// failed deliveries (possible for 7 days) pass.
    pub max_event_age: Option<Duration>,
    pub required_header: Option<RequiredHeader>,
    pub routing: TopicRouting,
    /// Add the legacy fields Butler 16 reads to bodies that lack them.
    pub butler_compat: bool,
}

/// The body of a request as the adapter could read it.
#[derive(Debug, Clone, Copy)]
pub enum Body<'a> {
    Complete(&'a [u8]),
    /// The adapter stopped reading past the limit (or Content-Length announced more).
    TooLarge {
        at_least: usize,
    },
    /// The client stopped sending before the whole body arrived (HTTP mode's body timeout).
    TimedOut,
}

/// A request as the relay sees it, whatever carried it (Lambda event or HTTP connection).
#[derive(Debug, Clone, Copy)]
pub struct WebhookRequest<'a> {
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
    pub body: Body<'a>,
}

/// What to put on the broker for an accepted event.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    pub topic: String,
    pub payload: Vec<u8>,
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub format: EnvelopeFormat,
}

/// Why a request is refused. Every variant is a request that will never succeed as sent, so a
/// 4xx is right: Qlik records the delivery as failed and does not hammer us with it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    #[error("method {0} not allowed; Qlik webhooks are POST")]
    MethodNotAllowed(Method),
    #[error("body of at least {at_least} bytes exceeds the limit of {limit} bytes")]
    PayloadTooLarge { at_least: usize, limit: usize },
    #[error("the body did not arrive in time")]
    BodyTimeout,
    #[error(
        "event of {bytes} bytes on a topic of {topic_bytes} bytes exceeds the MQTT packet limit \
         of {max} bytes",
        max = qlik_events::MAX_PACKET_BYTES
    )]
    TooLargeForBroker { bytes: usize, topic_bytes: usize },
    #[error("signature rejected: {0}")]
    Signature(#[from] SignatureError),
    #[error("required header {0} missing or wrong")]
    RequiredHeader(String),
    #[error("not a Qlik Cloud event: {0}")]
    Envelope(#[from] EnvelopeError),
    #[error("tenant {0} is not in ALLOWED_TENANTS")]
    TenantNotAllowed(String),
    #[error("event time is missing or not RFC 3339, and MAX_EVENT_AGE_SECS is set")]
    NoEventTime,
    #[error("event is {age_secs} s old (or in the future), MAX_EVENT_AGE_SECS is {max_secs}")]
    TooOld { age_secs: i64, max_secs: u64 },
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } | Self::TooLargeForBroker { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::Signature(_) | Self::RequiredHeader(_) => StatusCode::UNAUTHORIZED,
            Self::Envelope(_) | Self::NoEventTime => StatusCode::BAD_REQUEST,
            Self::TenantNotAllowed(_) | Self::TooOld { .. } => StatusCode::FORBIDDEN,
        }
    }

    /// What the caller is told. Authentication failures say nothing beyond "unauthorized", so a
    /// prober learns nothing about which check failed; the log has the reason.
    pub fn public_message(&self) -> String {
        match self {
            Self::Signature(_) | Self::RequiredHeader(_) => "unauthorized".to_owned(),
            other => other.to_string(),
        }
    }

    /// Every value [`Self::outcome`] takes, so metrics can show each at 0 before it happens.
    pub const OUTCOMES: [&'static str; 8] = [
        "method_not_allowed",
        "payload_too_large",
        "body_timeout",
        "bad_signature",
        "bad_required_header",
        "not_an_event",
        "tenant_not_allowed",
        "event_too_old",
    ];

    /// A short stable label for logs and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::MethodNotAllowed(_) => "method_not_allowed",
            Self::PayloadTooLarge { .. } | Self::TooLargeForBroker { .. } => "payload_too_large",
            Self::BodyTimeout => "body_timeout",
            Self::Signature(_) => "bad_signature",
            Self::RequiredHeader(_) => "bad_required_header",
            Self::Envelope(_) => "not_an_event",
            Self::TenantNotAllowed(_) => "tenant_not_allowed",
            Self::NoEventTime | Self::TooOld { .. } => "event_too_old",
        }
    }
}

/// Verify → parse → route. Checks run cheapest first, in the order the contract fixes.
pub fn decide(
    request: &WebhookRequest<'_>,
    policy: &Policy,
    now: OffsetDateTime,
) -> Result<Publication, Rejection> {
    if request.method != Method::POST {
        return Err(Rejection::MethodNotAllowed(request.method.clone()));
    }
    let body = match request.body {
        Body::Complete(bytes) if bytes.len() <= policy.max_body_bytes => bytes,
        Body::Complete(bytes) => {
            return Err(Rejection::PayloadTooLarge {
                at_least: bytes.len(),
                limit: policy.max_body_bytes,
            });
        }
        Body::TooLarge { at_least } => {
            return Err(Rejection::PayloadTooLarge {
                at_least,
                limit: policy.max_body_bytes,
            });
        }
        Body::TimedOut => return Err(Rejection::BodyTimeout),
    };
    let signature = request
        .headers
        .get(SIGNATURE_HEADER)
        .map(http::HeaderValue::as_bytes);
    let verified: VerifiedBody = policy.secrets.verify(signature, body)?;
    if let Some(required) = &policy.required_header {
        let sent = request
            .headers
            .get(&required.name)
            .map(http::HeaderValue::as_bytes)
            .unwrap_or_default();
        let expected = required.value.expose_secret().as_bytes();
        if !secret_value_eq(sent, expected) {
            return Err(Rejection::RequiredHeader(required.name.to_string()));
        }
    }
    let envelope = Envelope::parse(verified.as_bytes())?;
    if let Some(allowed) = &policy.allowed_tenants
        && !allowed.contains(&envelope.tenant_id)
    {
        return Err(Rejection::TenantNotAllowed(envelope.tenant_id));
    }
    if let Some(max_age) = policy.max_event_age {
        let time = envelope.timestamp().ok_or(Rejection::NoEventTime)?;
        let age = (now - time).whole_seconds();
        let max = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
        // A little future skew is tolerated; far-future times are as suspect as stale ones.
        if age > max || age < -300 {
            return Err(Rejection::TooOld {
                age_secs: age,
                max_secs: max_age.as_secs(),
            });
        }
    }
    let topic = policy.routing.topic_for(&envelope);
    let payload = if policy.butler_compat {
        with_legacy_fields(verified.as_bytes(), &envelope)?
    } else {
        verified.into_bytes()
    };
    // A topic from a long template, or the fields BUTLER_COMPAT adds, can push a body under
    // MAX_BODY_BYTES over the packet limit: 413, since a retry can never succeed.
    if !qlik_events::publish_fits(&topic, payload.len()) {
        return Err(Rejection::TooLargeForBroker {
            bytes: payload.len(),
            topic_bytes: topic.len(),
        });
    }
    Ok(Publication {
        topic,
        payload,
        event_id: envelope.id,
        event_type: envelope.event_type,
        tenant_id: envelope.tenant_id,
        format: envelope.format,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const SECRET: &str = "unit-test-secret-0123456789-abcdefghij";
    const ROTATED: &str = "unit-test-secret-rotated-0123456789-xyz";
    const LEGACY: &[u8] =
        include_bytes!("../../testdata/qlik-samples/app-reload-failed.legacy.json");
    const CLOUDEVENTS: &[u8] =
        include_bytes!("../../testdata/qlik-samples/app-reload-failed.cloudevents.json");
    const RELOAD: &[u8] =
        include_bytes!("../../testdata/qlik-samples/reload-finished-failed.cloudevents.json");
    const TENANT: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";

    fn policy() -> Policy {
        Policy {
            secrets: WebhookSecrets::from_list(SECRET).unwrap(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allowed_tenants: None,
            max_event_age: None,
            required_header: None,
            routing: TopicRouting::default(),
            butler_compat: false,
        }
    }

    fn signed(body: &[u8], secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "Qlik-Signature",
            HeaderValue::from_str(&qlik_events::sign(secret, body)).unwrap(),
        );
        headers
    }

    fn post<'a>(headers: &'a HeaderMap, body: &'a [u8]) -> WebhookRequest<'a> {
        WebhookRequest {
            method: &Method::POST,
            headers,
            body: Body::Complete(body),
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::parse(
            "2026-11-30T07:10:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    }

    fn status(result: Result<Publication, Rejection>) -> StatusCode {
        match result {
            Ok(_) => StatusCode::OK,
            Err(r) => r.status(),
        }
    }

    #[test]
    fn signed_events_in_every_envelope_are_published_byte_for_byte() {
        let hybrid = {
            let env = Envelope::parse(CLOUDEVENTS).unwrap();
            with_legacy_fields(CLOUDEVENTS, &env).unwrap()
        };
        for (body, format, topic) in [
            (
                LEGACY,
                EnvelopeFormat::Legacy,
                format!("qscloud/app/reload/{TENANT}"),
            ),
            (
                CLOUDEVENTS,
                EnvelopeFormat::CloudEvents,
                format!("qscloud/app/reload/{TENANT}"),
            ),
            (
                hybrid.as_slice(),
                EnvelopeFormat::Hybrid,
                format!("qscloud/app/reload/{TENANT}"),
            ),
            (
                RELOAD,
                EnvelopeFormat::CloudEvents,
                format!("qscloud/event/com.qlik.v1.reload.finished/{TENANT}"),
            ),
        ] {
            let headers = signed(body, SECRET);
            let publication = decide(&post(&headers, body), &policy(), now()).unwrap();
            assert_eq!(publication.payload, body);
            assert_eq!(publication.format, format);
            assert_eq!(publication.topic, topic);
            assert_eq!(publication.tenant_id, TENANT);
        }
    }

    #[test]
    fn non_post_is_405_before_anything_else() {
        let headers = HeaderMap::new();
        for method in [Method::GET, Method::PUT, Method::DELETE, Method::OPTIONS] {
            let request = WebhookRequest {
                method: &method,
                headers: &headers,
                body: Body::TooLarge { at_least: 1 << 30 },
            };
            assert_eq!(
                status(decide(&request, &policy(), now())),
                StatusCode::METHOD_NOT_ALLOWED
            );
        }
    }

    #[test]
    fn oversized_bodies_are_413_before_the_signature_is_computed() {
        let mut p = policy();
        p.max_body_bytes = 100;
        let body = vec![b' '; 101];
        let headers = HeaderMap::new(); // unsigned: the size check must come first
        assert_eq!(
            status(decide(&post(&headers, &body), &p, now())),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let request = WebhookRequest {
            method: &Method::POST,
            headers: &headers,
            body: Body::TooLarge { at_least: 101 },
        };
        assert_eq!(
            status(decide(&request, &p, now())),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let exactly = vec![b' '; 100];
        assert_eq!(
            status(decide(&post(&headers, &exactly), &p, now())),
            StatusCode::UNAUTHORIZED
        );
    }

    #[test]
    fn every_signature_failure_is_401_with_no_detail() {
        let body = CLOUDEVENTS;
        let wrong = signed(body, ROTATED);
        let mut not_hex = HeaderMap::new();
        not_hex.insert("qlik-signature", HeaderValue::from_static("zz"));
        let mut short = HeaderMap::new();
        short.insert("qlik-signature", HeaderValue::from_static("abcdef"));
        for (headers, reason) in [
            (HeaderMap::new(), SignatureError::Missing),
            (not_hex, SignatureError::NotHex),
            (short, SignatureError::WrongLength(6)),
            (wrong, SignatureError::Mismatch),
        ] {
            let rejection = decide(&post(&headers, body), &policy(), now()).unwrap_err();
            assert_eq!(rejection, Rejection::Signature(reason));
            assert_eq!(rejection.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(rejection.public_message(), "unauthorized");
        }
    }

    #[test]
    fn signature_header_name_is_case_insensitive_and_hex_may_be_upper_case() {
        let mut headers = HeaderMap::new();
        let sig = qlik_events::sign(SECRET, CLOUDEVENTS).to_uppercase();
        // HeaderMap normalizes names, as both HTTP/1 servers and lambda_http do.
        headers.insert(
            http::HeaderName::from_bytes(b"QLIK-SIGNATURE").unwrap(),
            HeaderValue::from_str(&sig).unwrap(),
        );
        assert!(decide(&post(&headers, CLOUDEVENTS), &policy(), now()).is_ok());
    }

    #[test]
    fn a_secret_being_rotated_in_or_out_is_accepted() {
        let mut p = policy();
        p.secrets = WebhookSecrets::from_list(&format!("{SECRET},{ROTATED}")).unwrap();
        for secret in [SECRET, ROTATED] {
            let headers = signed(CLOUDEVENTS, secret);
            assert!(decide(&post(&headers, CLOUDEVENTS), &p, now()).is_ok());
        }
    }

    #[test]
    fn signed_bodies_that_are_not_events_are_400() {
        for body in [&b"[1,2,3]"[..], b"not json", br#"{"hello":"world"}"#] {
            let headers = signed(body, SECRET);
            let rejection = decide(&post(&headers, body), &policy(), now()).unwrap_err();
            assert_eq!(rejection.status(), StatusCode::BAD_REQUEST, "{rejection}");
        }
    }

    #[test]
    fn tenants_outside_the_allow_list_are_403() {
        let mut p = policy();
        p.allowed_tenants = Some(HashSet::from(["someone-else".to_owned()]));
        let headers = signed(CLOUDEVENTS, SECRET);
        let rejection = decide(&post(&headers, CLOUDEVENTS), &p, now()).unwrap_err();
        assert_eq!(rejection, Rejection::TenantNotAllowed(TENANT.into()));
        assert_eq!(rejection.status(), StatusCode::FORBIDDEN);
        p.allowed_tenants = Some(HashSet::from([TENANT.to_owned()]));
        assert!(decide(&post(&headers, CLOUDEVENTS), &p, now()).is_ok());
    }

    #[test]
    fn required_custom_header_must_match() {
        let mut p = policy();
        p.required_header = Some(RequiredHeader {
            name: http::HeaderName::from_static("x-relay-token"),
            value: SecretString::from("s3cr3t-token".to_owned()),
        });
        let mut headers = signed(CLOUDEVENTS, SECRET);
        assert_eq!(
            status(decide(&post(&headers, CLOUDEVENTS), &p, now())),
            StatusCode::UNAUTHORIZED
        );
        headers.insert("x-relay-token", HeaderValue::from_static("s3cr3t-tokeX"));
        let rejection = decide(&post(&headers, CLOUDEVENTS), &p, now()).unwrap_err();
        assert_eq!(rejection.public_message(), "unauthorized");
        assert!(!rejection.to_string().contains("s3cr3t"));
        headers.insert("X-Relay-Token", HeaderValue::from_static("s3cr3t-token"));
        assert!(decide(&post(&headers, CLOUDEVENTS), &p, now()).is_ok());
    }

    #[test]
    fn maximum_event_age_uses_the_events_own_time() {
        let mut p = policy();
        p.max_event_age = Some(Duration::from_secs(600));
        let headers = signed(CLOUDEVENTS, SECRET); // time 07:06:22, now 07:10:00
        assert!(decide(&post(&headers, CLOUDEVENTS), &p, now()).is_ok());
        p.max_event_age = Some(Duration::from_secs(60));
        let rejection = decide(&post(&headers, CLOUDEVENTS), &p, now()).unwrap_err();
        assert_eq!(rejection.status(), StatusCode::FORBIDDEN);
        let body = br#"{"specversion":"1.0","id":"1","type":"t","tenantid":"x"}"#;
        let headers = signed(body, SECRET);
        assert_eq!(
            decide(&post(&headers, body), &p, now()).unwrap_err(),
            Rejection::NoEventTime
        );
    }

    /// A body of `len` bytes that is a valid CloudEvents envelope.
    fn padded_event(len: usize) -> Vec<u8> {
        let head = br#"{"specversion":"1.0","id":"1","type":"t","tenantid":"x","data":""#;
        let tail = br#""}"#;
        let mut body = head.to_vec();
        body.resize(len - tail.len(), b'p');
        body.extend_from_slice(tail);
        body
    }

    #[test]
    fn a_body_that_cannot_fit_in_an_mqtt_packet_is_413_not_a_retry() {
        let mut p = policy();
        p.max_body_bytes = qlik_events::MAX_PACKET_BYTES;
        let topic_len = "qscloud/event/t/x".len();
        let fits = qlik_events::MAX_PACKET_BYTES - qlik_events::PUBLISH_OVERHEAD_BYTES - topic_len;
        let body = padded_event(fits);
        let headers = signed(&body, SECRET);
        let publication = decide(&post(&headers, &body), &p, now()).unwrap();
        assert_eq!(publication.topic.len(), topic_len);
        let body = padded_event(fits + 1);
        let headers = signed(&body, SECRET);
        let rejection = decide(&post(&headers, &body), &p, now()).unwrap_err();
        assert_eq!(rejection.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(matches!(rejection, Rejection::TooLargeForBroker { .. }));
    }

    #[test]
    fn a_body_that_stopped_arriving_is_408() {
        let headers = HeaderMap::new();
        let request = WebhookRequest {
            method: &Method::POST,
            headers: &headers,
            body: Body::TimedOut,
        };
        let rejection = decide(&request, &policy(), now()).unwrap_err();
        assert_eq!(rejection.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(rejection.outcome(), "body_timeout");
    }

    #[test]
    fn butler_mode_adds_legacy_fields_only_when_asked() {
        let mut p = policy();
        p.butler_compat = true;
        let headers = signed(CLOUDEVENTS, SECRET);
        let publication = decide(&post(&headers, CLOUDEVENTS), &p, now()).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&publication.payload).unwrap();
        assert_eq!(v["eventType"], "com.qlik.v1.app.reload.finished");
        assert_eq!(v["extensions"]["tenantId"], TENANT);
        let headers = signed(LEGACY, SECRET);
        assert_eq!(
            decide(&post(&headers, LEGACY), &p, now()).unwrap().payload,
            LEGACY
        );
    }

    #[test]
    fn topic_template_overrides_the_default() {
        let mut p = policy();
        p.routing = TopicRouting::Template("qlik/{tenantId}/{status}/{appId}".parse().unwrap());
        let headers = signed(RELOAD, SECRET);
        assert_eq!(
            decide(&post(&headers, RELOAD), &p, now()).unwrap().topic,
            format!("qlik/{TENANT}/FAILED/7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f")
        );
    }

    #[test]
    fn outcomes_lists_every_rejection_label() {
        let every = [
            Rejection::MethodNotAllowed(Method::GET),
            Rejection::PayloadTooLarge {
                at_least: 2,
                limit: 1,
            },
            Rejection::TooLargeForBroker {
                bytes: 2,
                topic_bytes: 1,
            },
            Rejection::BodyTimeout,
            Rejection::Signature(SignatureError::Mismatch),
            Rejection::RequiredHeader("x-token".into()),
            Rejection::Envelope(EnvelopeError::NotObject),
            Rejection::TenantNotAllowed("t".into()),
            Rejection::NoEventTime,
            Rejection::TooOld {
                age_secs: 2,
                max_secs: 1,
            },
        ];
        let labels: HashSet<&str> = every.iter().map(Rejection::outcome).collect();
        let listed: HashSet<&str> = Rejection::OUTCOMES.into_iter().collect();
        assert_eq!(labels, listed);
    }
}
