//! A fake Qlik Cloud tenant REST API on 127.0.0.1 for tests: realistic responses for the five
//! endpoints the consumer calls for alerts and `users/me` (a tenant given by hostname), a Bearer JWT check (401 on anything else), and scripted faults
//! per endpoint (status codes, `Retry-After`, slow answers, hangs), and an optional latency on
//! every answer (a tenant far away: [`FakeTenant::set_latency`]).
//!
//! Also served on its own for `scripts/demo.sh`: `cargo run -q -p testkit --example fake-tenant`.
//!
//! ```ignore
//! use testkit::fake_tenant::{FakeTenant, Fault, Route};
//!
//! let tenant = FakeTenant::start().await;
//! tenant.fail_next(Route::ScriptLog, [Fault::Status(503)]);   // one 503, then normal answers
//! // point a TenantConfig at tenant.url() with tenant.jwt() …
//! tenant.wait_for(Route::ScriptLog, 2, Duration::from_secs(5)).await;
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The ids of the repository's Qlik samples (`testdata/qlik-samples`), so a sample event
/// enriches against this tenant without edits.
pub const TENANT_ID: &str = "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ";
pub const APP_ID: &str = "7c1d2e3f-4a5b-4c6d-8e9f-0a1b2c3d4e5f";
/// Reload id of the CloudEvents samples.
pub const RELOAD_ID: &str = "674ab6e2c1d0f80012e3f4a5";
/// Reload id of the legacy sample.
pub const LEGACY_RELOAD_ID: &str = "66e5727b9f3c8a0013a4b5c6";
pub const OWNER_ID: &str = "6319a8f0b3e1a2001f3c9d41";
pub const SPACE_ID: &str = "64db65d5970c28d340790f5c";
/// A JWT-shaped token (three base64url parts) that the fake accepts by default.
pub const JWT: &str = "eyJhbGciOiJFUzM4NCIsImtpZCI6ImZha2UifQ.eyJzdWIiOiJmYWtlLXRlbmFudC10ZXN0In0.ZmFrZS1zaWduYXR1cmUtZm9yLXRlc3Rz";

/// The endpoints, for scripting faults and counting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    /// `GET /api/v1/reloads/{id}`
    Reload,
    /// `GET /api/v1/apps/{appId}/reloads/logs/{reloadId}`
    ScriptLog,
    /// `GET /api/v1/apps/{appId}`
    App,
    /// `GET /api/v1/items?resourceType=app&resourceId={appId}`
    Items,
    /// `GET /api/v1/users/{id}`
    User,
    /// `GET /api/v1/users/me`: the JWT's user, with the `tenantId` a hostname resolves to.
    Me,
    /// Anything else (answered 404).
    Other,
}

impl Route {
    /// The five endpoints the consumer calls.
    pub const CALLED: [Route; 5] = [
        Route::Reload,
        Route::ScriptLog,
        Route::App,
        Route::Items,
        Route::User,
    ];
}

/// What the fake does instead of (or before) answering normally.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and a Qlik-style error body.
    Status(u16),
    /// Answer with this status and a `Retry-After` header with this value.
    RetryAfter(u16, String),
    /// Wait, then answer normally: a slow tenant.
    Delay(Duration),
    /// Never answer (until the test ends): for client timeouts.
    Hang,
}

/// One request the fake received. The token itself is not kept: only whether it matched.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub route: Route,
    pub path: String,
    pub query: Option<String>,
    pub accept: Option<String>,
    pub authorized: bool,
    pub at: std::time::Instant,
}

/// The tenant's content. Change it before or while tests run through [`FakeTenant::data`].
#[derive(Debug, Clone)]
pub struct TenantData {
    pub app_id: String,
    pub app_name: String,
    pub app_description: String,
    pub reload_ids: Vec<String>,
    pub owner_id: String,
    pub owner_name: String,
    pub owner_email: String,
    pub tags: Vec<String>,
    pub script_log: String,
    pub error_code: String,
    pub error_message: String,
    /// Apps with an owner of their own: an app whose id contains an entry's `needle` is known
    /// (app, script log and item answered as the default app's, with its own id and this
    /// owner), and the users API answers for the owner. Apps that match none and are not
    /// `app_id` are unknown (404), as before.
    pub app_owners: Vec<AppOwner>,
}

/// An owner of the apps whose ids contain `needle` (see [`TenantData::app_owners`]).
#[derive(Debug, Clone)]
pub struct AppOwner {
    pub needle: String,
    pub id: String,
    pub name: String,
    pub email: String,
}

impl AppOwner {
    pub fn new(needle: &str, id: &str, name: &str, email: &str) -> Self {
        Self {
            needle: needle.to_owned(),
            id: id.to_owned(),
            name: name.to_owned(),
            email: email.to_owned(),
        }
    }
}

impl TenantData {
    /// This tenant's data as seen for one app: the default app, or an app of
    /// [`Self::app_owners`] with its id and owner; `None`: an unknown app.
    fn for_app(&self, app: &str) -> Option<TenantData> {
        if app == self.app_id {
            return Some(self.clone());
        }
        let owner = self.app_owners.iter().find(|o| app.contains(&o.needle))?;
        let mut data = self.with_owner(owner);
        data.app_id = app.to_owned();
        Some(data)
    }

    /// This tenant's data as seen for one user id: the default owner or one of
    /// [`Self::app_owners`]; `None`: an unknown user.
    fn for_user(&self, id: &str) -> Option<TenantData> {
        if id == self.owner_id {
            return Some(self.clone());
        }
        self.app_owners
            .iter()
            .find(|o| o.id == id)
            .map(|owner| self.with_owner(owner))
    }

    fn with_owner(&self, owner: &AppOwner) -> TenantData {
        TenantData {
            owner_id: owner.id.clone(),
            owner_name: owner.name.clone(),
            owner_email: owner.email.clone(),
            ..self.clone()
        }
    }
}

impl Default for TenantData {
    fn default() -> Self {
        Self {
            app_id: APP_ID.to_owned(),
            app_name: "Sales dashboard".to_owned(),
            app_description: "Daily sales by region, reloaded every morning".to_owned(),
            reload_ids: vec![RELOAD_ID.to_owned(), LEGACY_RELOAD_ID.to_owned()],
            owner_id: OWNER_ID.to_owned(),
            owner_name: "Anna Andersson".to_owned(),
            owner_email: "anna.andersson@example.com".to_owned(),
            tags: vec![
                "Finance".to_owned(),
                "Butler - Send Teams alert if app reload fails".to_owned(),
            ],
            script_log: script_log(40),
            error_code: "RELOADS-007".to_owned(),
            error_message: "The reload failed: script error. Field 'Amount' not found".to_owned(),
            app_owners: Vec::new(),
        }
    }
}

/// A reload id of the form `<known id>.<suffix>`: another run of a known reload, answered like it.
/// The consumer alerts once per reload, so tests that alert several times make their reload ids
/// unique this way and still get enriched.
pub fn is_run_of(id: &str, known: &str) -> bool {
    id.strip_prefix(known)
        .is_some_and(|rest| rest.starts_with('.'))
}

/// A Qlik-looking script log of `lines` lines (CRLF, as Qlik sends it) ending in the error.
pub fn script_log(lines: usize) -> String {
    let mut out = Vec::with_capacity(lines);
    out.push("20261130T070612.456+0000 Execution started.".to_owned());
    out.push("20261130T070612.460+0000 Qlik Sense Server Version 14.212.5".to_owned());
    for i in 2..lines.saturating_sub(3) {
        out.push(format!(
            "20261130T0706{:02}.{:03}+0000 {:04} LOAD * FROM [lib://DataFiles/sales_{i}.qvd] (qvd); -- {} lines fetched",
            12 + (i % 40),
            i % 1000,
            i,
            i * 1000
        ));
    }
    out.push("20261130T070621.390+0000 Field 'Amount' not found".to_owned());
    out.push("20261130T070621.395+0000 Execution Failed".to_owned());
    out.push("20261130T070621.400+0000 Execution finished.".to_owned());
    out.truncate(lines.max(1));
    let mut text = out.join("\r\n");
    text.push_str("\r\n");
    text
}

struct Shared {
    token: Mutex<String>,
    data: Mutex<TenantData>,
    once: Mutex<HashMap<Route, VecDeque<Fault>>>,
    always: Mutex<HashMap<Route, Fault>>,
    requests: Mutex<Vec<Recorded>>,
    arrived: Notify,
    /// See [`FakeTenant::set_latency`].
    latency: Mutex<Duration>,
    /// See [`FakeTenant::gate`].
    gate: Mutex<Option<GateState>>,
    gate_opened: Notify,
    /// See [`FakeTenant::hold`]: paths containing one of these wait until released.
    held: Mutex<Vec<String>>,
    released: Notify,
}

/// Requests to one route wait until `k` of them are in hand at once, then all are answered.
#[derive(Debug, Clone)]
struct GateState {
    route: Route,
    k: usize,
    max_wait: Duration,
    in_hand: usize,
    generation: u64,
    stats: GateStats,
}

/// What a gate saw: how many requests it held at once at most, how many it let through because
/// `k` were in hand, and how many because one waited `max_wait` in vain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GateStats {
    pub max_in_hand: usize,
    pub released_together: usize,
    pub released_alone: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread poisons the lock; the data is still fine for other assertions.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The running fake. Stops when dropped.
pub struct FakeTenant {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeTenant {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeTenant {
    /// Starts on 127.0.0.1 with an ephemeral port, accepting [`JWT`], with [`TenantData`]'s
    /// defaults. Must run inside a Tokio runtime.
    pub async fn start() -> Self {
        Self::start_with(TenantData::default()).await
    }

    pub async fn start_with(data: TenantData) -> Self {
        Self::start_on(0, data).await
    }

    /// Starts on 127.0.0.1:`port` (0: an ephemeral port), panicking when it cannot bind.
    pub async fn start_on(port: u16, data: TenantData) -> Self {
        let shared = Arc::new(Shared {
            token: Mutex::new(JWT.to_owned()),
            data: Mutex::new(data),
            once: Mutex::new(HashMap::new()),
            always: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            arrived: Notify::new(),
            gate: Mutex::new(None),
            gate_opened: Notify::new(),
            held: Mutex::new(Vec::new()),
            released: Notify::new(),
            latency: Mutex::new(Duration::ZERO),
        });
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("bind 127.0.0.1:{port}: {e}"));
        let addr = listener.local_addr().expect("local addr");
        let state = shared.clone();
        let app = Router::new().fallback(move |req: Request<Body>| {
            let state = state.clone();
            async move { handle(state, req).await }
        });
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            server,
        }
    }

    /// `http://127.0.0.1:<port>`: use as `tenantUrl` (plain http is allowed on loopback).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token the fake accepts.
    pub fn jwt(&self) -> String {
        lock(&self.shared.token).clone()
    }

    pub fn set_jwt(&self, token: &str) {
        *lock(&self.shared.token) = token.to_owned();
    }

    /// Edit the tenant's content.
    pub fn data(&self, edit: impl FnOnce(&mut TenantData)) {
        edit(&mut lock(&self.shared.data));
    }

    /// The next requests to `route` get these faults, one each, then normal answers resume.
    pub fn fail_next(&self, route: Route, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.shared.once)
            .entry(route)
            .or_default()
            .extend(faults);
    }

    /// Every request to `route` gets this fault until [`Self::heal`].
    pub fn fail_always(&self, route: Route, fault: Fault) {
        lock(&self.shared.always).insert(route, fault);
    }

    /// Every route fails with this fault: the tenant API is down.
    pub fn fail_everything(&self, fault: Fault) {
        for route in Route::CALLED {
            self.fail_always(route, fault.clone());
        }
    }

    /// Requests to `route` are held until `k` of them are in hand at once, then all of them are
    /// answered (normally). One that waits `max_wait` in vain is answered alone. With `k`
    /// requests needed at once, all requests answered together proves they were made
    /// concurrently, without timing; [`Self::gate_stats`] says what happened.
    pub fn gate(&self, route: Route, k: usize, max_wait: Duration) {
        *lock(&self.shared.gate) = Some(GateState {
            route,
            k: k.max(1),
            max_wait,
            in_hand: 0,
            generation: 0,
            stats: GateStats::default(),
        });
    }

    pub fn gate_stats(&self) -> GateStats {
        lock(&self.shared.gate)
            .as_ref()
            .map(|g| g.stats)
            .unwrap_or_default()
    }

    /// Requests whose path contains `needle` wait (unanswered) until [`Self::release`].
    pub fn hold(&self, needle: &str) {
        lock(&self.shared.held).push(needle.to_owned());
    }

    /// Answers every request held by [`Self::hold`], and holds no more.
    pub fn release(&self) {
        lock(&self.shared.held).clear();
        self.shared.released.notify_waiters();
    }

    /// How many requests whose path contains `needle` arrived.
    pub fn count_path(&self, needle: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.path.contains(needle))
            .count()
    }

    /// Every answer (errors and faults included) comes this long after its request arrived,
    /// requests being answered concurrently: a tenant with this round-trip time. Zero (the
    /// default) answers at once. Not undone by [`Self::heal`].
    pub fn set_latency(&self, latency: Duration) {
        *lock(&self.shared.latency) = latency;
    }

    pub fn heal(&self) {
        lock(&self.shared.always).clear();
        lock(&self.shared.once).clear();
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    pub fn count(&self, route: Route) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.route == route)
            .count()
    }

    /// Waits until `route` has received at least `n` requests; false on timeout.
    pub async fn wait_for(&self, route: Route, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.arrived.notified();
            if self.count(route) >= n {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.count(route) >= n;
            }
        }
    }
}

async fn wait_while_held(state: &Shared, path: &str) {
    loop {
        let released = state.released.notified();
        tokio::pin!(released);
        released.as_mut().enable();
        if !lock(&state.held).iter().any(|n| path.contains(n.as_str())) {
            return;
        }
        released.await;
    }
}

async fn pass_gate(state: &Shared, route: Route) {
    let (generation, max_wait) = {
        let mut gate = lock(&state.gate);
        let Some(g) = gate.as_mut().filter(|g| g.route == route) else {
            return;
        };
        g.in_hand += 1;
        g.stats.max_in_hand = g.stats.max_in_hand.max(g.in_hand);
        if g.in_hand >= g.k {
            g.stats.released_together += g.in_hand;
            g.in_hand = 0;
            g.generation += 1;
            state.gate_opened.notify_waiters();
            return;
        }
        (g.generation, g.max_wait)
    };
    let deadline = tokio::time::Instant::now() + max_wait;
    loop {
        let opened = state.gate_opened.notified();
        tokio::pin!(opened);
        opened.as_mut().enable();
        let through = {
            let mut gate = lock(&state.gate);
            match gate.as_mut() {
                None => true,
                Some(g) if g.generation != generation => true,
                Some(g) if tokio::time::Instant::now() >= deadline => {
                    g.in_hand -= 1;
                    g.stats.released_alone += 1;
                    true
                }
                Some(_) => false,
            }
        };
        if through {
            return;
        }
        let _ = tokio::time::timeout_at(deadline, opened).await;
    }
}

fn route_of(path: &str) -> (Route, Vec<String>) {
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(url_decode)
        .collect();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let route = match p.as_slice() {
        ["api", "v1", "reloads", _] => Route::Reload,
        ["api", "v1", "apps", _, "reloads", "logs", _] => Route::ScriptLog,
        ["api", "v1", "apps", _] => Route::App,
        ["api", "v1", "items"] => Route::Items,
        ["api", "v1", "users", "me"] => Route::Me,
        ["api", "v1", "users", _] => Route::User,
        _ => Route::Other,
    };
    (route, parts)
}

fn url_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_owned())
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// A JSON answer, as the tenant API gives one.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    response
}

fn qlik_error(status: StatusCode) -> Response {
    json_response(
        status,
        &json!({"errors": [{
            "code": format!("HTTP-{}", status.as_u16()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16().to_string(),
        }]}),
    )
}

async fn handle(state: Arc<Shared>, req: Request<Body>) -> Response {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().map(str::to_owned);
    let (route, parts) = route_of(&path);
    let expected = format!("Bearer {}", lock(&state.token));
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&state.requests).push(Recorded {
        route,
        path: path.clone(),
        query: query.clone(),
        accept,
        authorized,
        at: std::time::Instant::now(),
    });
    state.arrived.notify_waiters();

    let latency = *lock(&state.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if !authorized {
        return qlik_error(StatusCode::UNAUTHORIZED);
    }
    wait_while_held(&state, &path).await;
    pass_gate(&state, route).await;
    let fault = lock(&state.once)
        .get_mut(&route)
        .and_then(VecDeque::pop_front)
        .or_else(|| lock(&state.always).get(&route).cloned());
    match fault {
        Some(Fault::Status(code)) => {
            return qlik_error(
                StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            );
        }
        Some(Fault::RetryAfter(code, after)) => {
            let mut response =
                qlik_error(StatusCode::from_u16(code).unwrap_or(StatusCode::TOO_MANY_REQUESTS));
            if let Ok(value) = HeaderValue::from_str(&after) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        Some(Fault::Hang) => {
            std::future::pending::<()>().await;
        }
        None => {}
    }

    let data = lock(&state.data).clone();
    let p: Vec<&str> = parts.iter().map(String::as_str).collect();
    let known = |id: &str| data.reload_ids.iter().any(|r| r == id || is_run_of(id, r));
    match (route, p.as_slice()) {
        (Route::Reload, [.., id]) if known(id) => {
            json_response(StatusCode::OK, &reload_json(&data, id))
        }
        (Route::ScriptLog, [_, _, _, app, _, _, id]) if known(id) => match data.for_app(app) {
            Some(app) => {
                let mut response = Response::new(Body::from(app.script_log));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                response
            }
            None => qlik_error(StatusCode::NOT_FOUND),
        },
        (Route::App, [.., app]) => match data.for_app(app) {
            Some(app) => json_response(StatusCode::OK, &app_json(&app)),
            None => qlik_error(StatusCode::NOT_FOUND),
        },
        (Route::Items, _) => {
            let wanted = query_param(query.as_deref(), "resourceId");
            let kind = query_param(query.as_deref(), "resourceType");
            let items = match wanted.as_deref().and_then(|app| data.for_app(app)) {
                Some(app) if kind.as_deref() == Some("app") => vec![item_json(&app)],
                _ => Vec::new(),
            };
            json_response(
                StatusCode::OK,
                &json!({"data": items, "links": {"self": {"href": format!("/api/v1/items?{}", query.unwrap_or_default())}}}),
            )
        }
        (Route::Me, _) => json_response(StatusCode::OK, &user_json(&data)),
        (Route::User, [.., id]) => match data.for_user(id) {
            Some(user) => json_response(StatusCode::OK, &user_json(&user)),
            None => qlik_error(StatusCode::NOT_FOUND),
        },
        _ => qlik_error(StatusCode::NOT_FOUND),
    }
}

fn reload_json(d: &TenantData, id: &str) -> Value {
    json!({
        "id": id,
        "appId": d.app_id,
        "tenantId": TENANT_ID,
        "userId": d.owner_id,
        "type": "chronos",
        "status": "FAILED",
        "partial": false,
        "creationTime": "2026-11-30T07:06:10.123Z",
        "startTime": "2026-11-30T07:06:12.456Z",
        "endTime": "2026-11-30T07:06:21.400Z",
        "engineTime": "2026-11-30T07:06:12.460Z",
        "log": "Started loading data\nError: Field 'Amount' not found\nThe reload failed",
        "errorCode": d.error_code,
        "errorMessage": d.error_message,
        "links": {"self": {"href": format!("https://acme.eu.qlikcloud.com/api/v1/reloads/{id}")}},
    })
}

fn app_json(d: &TenantData) -> Value {
    json!({
        "attributes": {
            "id": d.app_id,
            "name": d.app_name,
            "description": d.app_description,
            "thumbnail": "",
            "lastReloadTime": "2026-11-29T07:06:21.400Z",
            "createdDate": "2025-03-02T10:00:00.000Z",
            "modifiedDate": "2026-11-29T07:06:21.400Z",
            "owner": format!("auth0|{}", d.owner_id),
            "ownerId": d.owner_id,
            "dynamicColor": "",
            "published": false,
            "publishTime": "",
            "custom": {},
            "hasSectionAccess": false,
            "encrypted": true,
            "originAppId": "",
            "isDirectQueryMode": false,
            "usage": "ANALYTICS",
            "spaceId": SPACE_ID,
            "_resourcetype": "app"
        },
        "privileges": ["read", "update", "delete", "reload", "export"],
        "create": [{"resource": "sheet", "canCreate": true}]
    })
}

fn item_json(d: &TenantData) -> Value {
    let tags: Vec<Value> = d
        .tags
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("6409f1c2a7b3d4e5f60718{i:02}"), "name": t}))
        .collect();
    json!({
        "id": "6409f1c2a7b3d4e5f6071899",
        "name": d.app_name,
        "resourceId": d.app_id,
        "resourceType": "app",
        "resourceSubType": "",
        "resourceSize": {"appFile": 1_234_567, "appMemory": 18_234_567},
        "ownerId": d.owner_id,
        "spaceId": SPACE_ID,
        "meta": {"tags": tags, "collections": [], "isFavorited": false, "actions": []},
        "createdAt": "2025-03-02T10:00:00Z",
        "updatedAt": "2026-11-29T07:06:21Z"
    })
}

fn user_json(d: &TenantData) -> Value {
    json!({
        "id": d.owner_id,
        "tenantId": TENANT_ID,
        "status": "active",
        "subject": format!("auth0|{}", d.owner_id),
        "name": d.owner_name,
        "email": d.owner_email,
        "picture": "https://s.gravatar.com/avatar/fake.png",
        "assignedRoles": [{"id": "r1", "name": "TenantAdmin", "type": "default", "level": "admin"}],
        "createdAt": "2025-01-10T09:00:00.000Z",
        "lastUpdatedAt": "2026-11-01T09:00:00.000Z",
        "links": {"self": {"href": format!("https://acme.eu.qlikcloud.com/api/v1/users/{}", d.owner_id)}}
    })
}
