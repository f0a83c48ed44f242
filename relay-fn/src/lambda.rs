//! Lambda mode: Function URL, API Gateway HTTP API (payload 2.0) and REST API (1.0) events.
//! lambda_http decodes base64 bodies before we see them, so the HMAC runs on the raw bytes.

use std::sync::Arc;

use lambda_http::{Body as LambdaBody, Error, Request, Response, service_fn};

use crate::decision::{Body, WebhookRequest};
use crate::service::Relay;

/// With `AWS_LAMBDA_MAX_CONCURRENCY` above 1 (Lambda Managed Instances) one execution environment
/// polls for that many invocations at once; the publisher already confirms concurrent publishes
/// on its one connection. Without it, invocations come one at a time as in classic Lambda.
pub async fn run(relay: Arc<Relay>) -> Result<(), Error> {
    lambda_http::run_concurrent(service_fn(move |request: Request| {
        let relay = relay.clone();
        async move { Ok::<_, Error>(handle(&relay, request).await) }
    }))
    .await
}

pub async fn handle(relay: &Relay, request: Request) -> Response<LambdaBody> {
    let body: &[u8] = request.body().as_ref();
    let reply = relay
        .handle(WebhookRequest {
            method: request.method(),
            headers: request.headers(),
            body: Body::Complete(body),
        })
        .await;
    let mut response = Response::new(LambdaBody::Text(reply.body));
    *response.status_mut() = reply.status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Tells the Lambda service why the cold start failed, as the Runtime API provides for, so the
/// invoke error and the console show the reason and not just "Runtime exited". Best effort: the
/// process exits non-zero and logs the same message whether or not this arrives.
pub async fn report_init_error(runtime_api: &str, message: &str) {
    let endpoint: http::Uri = match format!("http://{runtime_api}").parse() {
        Ok(uri) => uri,
        Err(_) => return,
    };
    let client = lambda_runtime_api_client::PooledClient::builder()
        .with_endpoint(endpoint)
        .build();
    let body = serde_json::json!({
        "errorType": INIT_ERROR_TYPE,
        "errorMessage": message,
        "stackTrace": [],
    })
    .to_string();
    let request = lambda_runtime_api_client::build_request()
        .method(http::Method::POST)
        .uri("/2018-06-01/runtime/init/error")
        .header("Lambda-Runtime-Function-Error-Type", INIT_ERROR_TYPE)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(lambda_runtime_api_client::body::Body::from(body));
    let Ok(request) = request else { return };
    match tokio::time::timeout(std::time::Duration::from_secs(2), client.call(request)).await {
        Ok(Ok(response)) => tracing::debug!(status = %response.status(), "init error reported"),
        Ok(Err(e)) => tracing::debug!(error = %e, "init error not reported"),
        Err(_) => tracing::debug!("init error not reported: Runtime API did not answer"),
    }
}

/// The error type the console shows for a failed cold start: a setting is missing or wrong.
pub const INIT_ERROR_TYPE: &str = "Runtime.ConfigError";
