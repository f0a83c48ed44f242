//! Lambda mode: Function URL, API Gateway HTTP API (payload 2.0) and REST API (1.0) events.
//! lambda_http decodes base64 bodies before we see them, so the HMAC runs on the raw bytes.

use std::sync::Arc;

use lambda_http::{Body as LambdaBody, Error, Request, Response, service_fn};

use crate::decision::{Body, WebhookRequest};
use crate::service::Relay;

pub async fn run(relay: Arc<Relay>) -> Result<(), Error> {
    lambda_http::run(service_fn(move |request: Request| {
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
