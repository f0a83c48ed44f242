//! A fake of Qlik Cloud's webhooks API (`/api/v1/webhooks…`) on 127.0.0.1 for tests: create,
//! list (paged through `links.next.href`), get, delete, patch, deliveries (newest first, paged,
//! `status` filter) and resend, with Qlik's validation rules and error shape
//! (`{"errors":[{"code","title","detail","status"}],"traceId"}`), a Bearer JWT check, and
//! scripted failures.
//!
//! Like the real API of older tenants, it returns the `secret` and header values of webhooks,
//! so tests can check the consumer never prints them.
//!
//! ```ignore
//! let api = FakeWebhooks::start().await;
//! let id = api.add_webhook(json!({"name": "relay", "url": "https://relay.example/", …}));
//! api.add_delivery(&id, "fail", minutes_ago(30), "event-1");
//! // point a tenant at api.url() with api.jwt() …
//! assert_eq!(api.resends(), vec![(id, delivery_id)]);
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::fake_tenant::json_response;

pub use super::fake_tenant::{JWT, TENANT_ID};

pub const APP_RELOAD: &str = "com.qlik.v1.app.reload.finished";
pub const RELOAD: &str = "com.qlik.v1.reload.finished";

/// One request the fake received, with its body and `Authorization` header (tests assert on
/// both; this is test code).
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub body: Option<Value>,
    pub authorization: Option<String>,
}

/// A scripted answer given instead of the normal one.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

#[derive(Default)]
struct Shared {
    token: Mutex<String>,
    base: Mutex<String>,
    webhooks: Mutex<Vec<Value>>,
    deliveries: Mutex<HashMap<String, Vec<Value>>>,
    requests: Mutex<Vec<Recorded>>,
    resends: Mutex<Vec<(String, String)>>,
    next_answers: Mutex<VecDeque<Scripted>>,
    failing_resends: Mutex<HashMap<String, u16>>,
    page_size: AtomicUsize,
    ids: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeWebhooks {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeWebhooks {
    pub async fn start() -> FakeWebhooks {
        let shared = Arc::new(Shared::default());
        *lock(&shared.token) = JWT.to_owned();
        shared.page_size.store(100, Ordering::SeqCst);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake webhooks API");
        let addr = listener.local_addr().expect("address");
        *lock(&shared.base) = format!("http://{addr}");
        let state = Arc::clone(&shared);
        let app = Router::new().fallback(move |req: Request<Body>| {
            let state = Arc::clone(&state);
            async move { handle(state, req).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeWebhooks { addr, shared }
    }

    /// Base URL, usable as `tenantUrl`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn jwt(&self) -> String {
        lock(&self.shared.token).clone()
    }

    /// At most this many items per page, whatever `limit` asks (to test pagination).
    pub fn set_page_size(&self, n: usize) {
        self.shared.page_size.store(n.max(1), Ordering::SeqCst);
    }

    /// Adds a webhook as the tenant would hold it (id, timestamps and defaults filled in).
    pub fn add_webhook(&self, fields: Value) -> String {
        let hook = self.complete(fields);
        let id = hook["id"].as_str().unwrap_or_default().to_owned();
        lock(&self.shared.webhooks).push(hook);
        id
    }

    /// The webhooks now held (with secrets, as stored).
    pub fn webhooks(&self) -> Vec<Value> {
        lock(&self.shared.webhooks).clone()
    }

    /// Adds a delivery of `webhook`: `status` `success` or `fail`, the event id in the body.
    pub fn add_delivery(
        &self,
        webhook: &str,
        status: &str,
        triggered_at: OffsetDateTime,
        event_id: &str,
    ) -> String {
        let id = format!("dlv-{}", self.shared.ids.fetch_add(1, Ordering::SeqCst));
        let delivery = json!({
            "id": id,
            "webhookId": webhook,
            "status": status,
            "statusMessage": if status == "fail" { "Request failed with status code 503" } else { "OK" },
            "eventType": APP_RELOAD,
            "triggeredAt": rfc3339(triggered_at),
            "request": {
                "url": "https://relay.example/",
                "headers": {"Content-Type": "application/json", "Qlik-Signature": "ab12"},
                "body": {"specversion": "1.0", "id": event_id, "type": APP_RELOAD,
                         "tenantid": TENANT_ID, "time": rfc3339(triggered_at),
                         "data": {"status": "error"}}
            },
            "response": {"statusCode": if status == "fail" { 503 } else { 200 },
                         "body": "", "headers": {}}
        });
        lock(&self.shared.deliveries)
            .entry(webhook.to_owned())
            .or_default()
            .push(delivery);
        id
    }

    /// Every request received, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// `(webhookId, deliveryId)` of every resend that was carried out (not the failed ones).
    pub fn resends(&self) -> Vec<(String, String)> {
        lock(&self.shared.resends).clone()
    }

    /// The next request (any route) is answered with `status` and Qlik's error body made of
    /// `errors` (or a generic one when empty).
    pub fn fail_next(&self, status: u16, errors: Value) {
        let body = if errors.is_null() {
            generic_error_body(status)
        } else {
            json!({"errors": errors, "traceId": "0123456789abcdef"})
        };
        lock(&self.shared.next_answers).push_back(Scripted {
            status,
            body,
            retry_after: None,
        });
    }

    /// The next request is answered 429 with this `Retry-After`.
    pub fn rate_limit_next(&self, retry_after: &str) {
        lock(&self.shared.next_answers).push_back(Scripted {
            status: 429,
            body: generic_error_body(429),
            retry_after: Some(retry_after.to_owned()),
        });
    }

    /// Resending this delivery is answered with `status`, every time.
    pub fn fail_resend_of(&self, delivery: &str, status: u16) {
        lock(&self.shared.failing_resends).insert(delivery.to_owned(), status);
    }

    fn complete(&self, fields: Value) -> Value {
        let mut hook = json!({
            "id": format!("wh-{}", self.shared.ids.fetch_add(1, Ordering::SeqCst)),
            "level": "tenant",
            "enabled": false,
            "eventTypes": [],
            "headers": {},
            "filter": "",
            "description": "",
            "origin": "api",
            "ownerId": "6319a8f0b3e1a2001f3c9d41",
            "createdByUserId": "6319a8f0b3e1a2001f3c9d41",
            "updatedByUserId": "6319a8f0b3e1a2001f3c9d41",
            "createdAt": "2026-11-30T07:00:00.000Z",
            "updatedAt": "2026-11-30T07:00:00.000Z",
            "checkCertificateRevocation": false,
            "enableCloudEventDelivery": true,
        });
        if let (Some(map), Some(fields)) = (hook.as_object_mut(), fields.as_object()) {
            for (k, v) in fields {
                map.insert(k.clone(), v.clone());
            }
        }
        hook
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn generic_error_body(status: u16) -> Value {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json!({"errors": [{
        "code": format!("HTTP-{status}"),
        "title": code.canonical_reason().unwrap_or("Error"),
        "status": status.to_string(),
    }], "traceId": "0123456789abcdef"})
}

fn error(status: u16, code: &str, title: &str, detail: &str) -> Response {
    json_response(
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        &json!({"errors": [{"code": code, "title": title, "detail": detail,
                            "status": status.to_string()}],
                "traceId": "0123456789abcdef"}),
    )
}

fn not_found(what: &str) -> Response {
    error(
        404,
        "WEBHOOKS-404",
        "Not found",
        &format!("{what} not found"),
    )
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// One page of `items` from the offset in `next`, with an absolute `links.next.href`.
fn page(shared: &Shared, path: &str, query: Option<&str>, items: &[Value]) -> Value {
    let start: usize = query_param(query, "next")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let limit: usize = query_param(query, "limit")
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let size = limit.min(shared.page_size.load(Ordering::SeqCst)).max(1);
    let end = (start + size).min(items.len());
    let data: Vec<Value> = items.get(start..end).unwrap_or_default().to_vec();
    let base = lock(&shared.base).clone();
    let mut links = json!({"self": {"href": format!("{base}{path}")}});
    if end < items.len() {
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            if k != "next" {
                next.append_pair(&k, &v);
            }
        }
        next.append_pair("next", &end.to_string());
        links["next"] = json!({"href": format!("{base}{path}?{}", next.finish())});
    }
    json!({"data": data, "links": links})
}

async fn handle(state: Arc<Shared>, req: Request<Body>) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let authorization = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let bytes = axum::body::to_bytes(req.into_body(), 1024 * 1024)
        .await
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    lock(&state.requests).push(Recorded {
        method: method.to_string(),
        path: path.clone(),
        query: query.clone(),
        body: body.clone(),
        authorization: authorization.clone(),
    });

    if authorization.as_deref() != Some(format!("Bearer {}", lock(&state.token)).as_str()) {
        return json_response(StatusCode::UNAUTHORIZED, &generic_error_body(401));
    }
    if let Some(scripted) = lock(&state.next_answers).pop_front() {
        let mut response = json_response(
            StatusCode::from_u16(scripted.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            &scripted.body,
        );
        if let Some(after) = scripted
            .retry_after
            .and_then(|a| HeaderValue::from_str(&a).ok())
        {
            response.headers_mut().insert(header::RETRY_AFTER, after);
        }
        return response;
    }

    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        (Method::GET, ["api", "v1", "webhooks"]) => {
            let hooks = lock(&state.webhooks).clone();
            json_response(
                StatusCode::OK,
                &page(&state, &path, query.as_deref(), &hooks),
            )
        }
        (Method::POST, ["api", "v1", "webhooks"]) => create(&state, body),
        (Method::GET, ["api", "v1", "webhooks", id]) => {
            match lock(&state.webhooks).iter().find(|h| h["id"] == *id) {
                Some(h) => json_response(StatusCode::OK, h),
                None => not_found("webhook"),
            }
        }
        (Method::DELETE, ["api", "v1", "webhooks", id]) => {
            let mut hooks = lock(&state.webhooks);
            let before = hooks.len();
            hooks.retain(|h| h["id"] != *id);
            if hooks.len() == before {
                not_found("webhook")
            } else {
                Response::builder()
                    .status(StatusCode::NO_CONTENT)
                    .body(Body::empty())
                    .unwrap_or_default()
            }
        }
        (Method::PATCH, ["api", "v1", "webhooks", id]) => {
            let mut hooks = lock(&state.webhooks);
            let Some(hook) = hooks.iter_mut().find(|h| h["id"] == *id) else {
                return not_found("webhook");
            };
            for op in body
                .as_ref()
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if op["path"] == "/enabled" {
                    hook["enabled"] = op["value"].clone();
                    if op["value"] == true {
                        hook["disabledReason"] = Value::Null;
                        hook["disabledReasonCode"] = Value::Null;
                    }
                }
            }
            Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Body::empty())
                .unwrap_or_default()
        }
        (Method::GET, ["api", "v1", "webhooks", id, "deliveries"]) => {
            if !lock(&state.webhooks).iter().any(|h| h["id"] == *id) {
                return not_found("webhook");
            }
            let mut items = lock(&state.deliveries)
                .get(*id)
                .cloned()
                .unwrap_or_default();
            if let Some(status) = query_param(query.as_deref(), "status") {
                items.retain(|d| d["status"] == status.as_str());
            }
            let ascending = query_param(query.as_deref(), "sort").as_deref()
                == Some("+triggeredAt")
                || query_param(query.as_deref(), "sort").as_deref() == Some("triggeredAt");
            items.sort_by(|a, b| {
                let (a, b) = (
                    a["triggeredAt"].as_str().unwrap_or(""),
                    b["triggeredAt"].as_str().unwrap_or(""),
                );
                if ascending { a.cmp(b) } else { b.cmp(a) }
            });
            json_response(
                StatusCode::OK,
                &page(&state, &path, query.as_deref(), &items),
            )
        }
        (
            Method::POST,
            [
                "api",
                "v1",
                "webhooks",
                id,
                "deliveries",
                delivery,
                "actions",
                "resend",
            ],
        ) => {
            let original = lock(&state.deliveries)
                .get(*id)
                .and_then(|ds| ds.iter().find(|d| d["id"] == *delivery).cloned());
            let Some(original) = original else {
                return not_found("delivery");
            };
            if let Some(status) = lock(&state.failing_resends).get(*delivery) {
                return json_response(
                    StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    &generic_error_body(*status),
                );
            }
            lock(&state.resends).push(((*id).to_owned(), (*delivery).to_owned()));
            // Qlik records the resend as a new delivery of the same payload.
            let mut resent = original;
            resent["id"] = json!(format!("dlv-{}", state.ids.fetch_add(1, Ordering::SeqCst)));
            resent["status"] = json!("success");
            resent["triggeredAt"] = json!(rfc3339(OffsetDateTime::now_utc()));
            resent["response"] = json!({"statusCode": 200, "body": "", "headers": {}});
            lock(&state.deliveries)
                .entry((*id).to_owned())
                .or_default()
                .push(resent.clone());
            json_response(StatusCode::CREATED, &resent)
        }
        _ => not_found("resource"),
    }
}

/// `POST /api/v1/webhooks` with Qlik's documented rules.
fn create(state: &Shared, body: Option<Value>) -> Response {
    let Some(body) = body.filter(Value::is_object) else {
        return error(
            400,
            "WEBHOOKS-1",
            "Bad request",
            "body must be a JSON object",
        );
    };
    for field in ["name", "url"] {
        if body[field].as_str().is_none_or(str::is_empty) {
            return error(
                400,
                "WEBHOOKS-2",
                "Validation error",
                &format!("{field} is required"),
            );
        }
    }
    if let Some(secret) = body["secret"].as_str() {
        let n = secret.chars().count();
        if !(32..=64).contains(&n) {
            return error(
                400,
                "WEBHOOKS-3",
                "Validation error",
                "secret must be between 32 and 64 characters",
            );
        }
    }
    let types: Vec<&str> = body["eventTypes"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if body["filter"]
        .as_str()
        .is_some_and(|f| f.contains("data.status"))
        && types != [APP_RELOAD]
    {
        return error(
            400,
            "WEBHOOKS-4",
            "Invalid filter",
            "data.status can't be used together with other event types",
        );
    }
    let mut fields = body.clone();
    // Encrypted headers come back as names only.
    if let Some(map) = body["encryptedHeaders"].as_object() {
        fields["encryptedHeaders"] = json!(map.keys().collect::<Vec<_>>());
    }
    let hook = {
        let mut hook = json!({
            "id": format!("wh-{}", state.ids.fetch_add(1, Ordering::SeqCst)),
            "level": "tenant", "enabled": false, "eventTypes": [], "headers": {},
            "origin": "api", "createdAt": rfc3339(OffsetDateTime::now_utc()),
            "updatedAt": rfc3339(OffsetDateTime::now_utc()),
        });
        if let (Some(map), Some(fields)) = (hook.as_object_mut(), fields.as_object()) {
            for (k, v) in fields {
                map.insert(k.clone(), v.clone());
            }
        }
        hook
    };
    lock(&state.webhooks).push(hook.clone());
    // Older tenants echo the secret (deprecated); the consumer must not print it.
    json_response(StatusCode::CREATED, &hook)
}
