//! A receiver of the consumer's generic webhook alerts, for `scripts/demo.sh`: each alert is
//! printed to stdout as a short card (app, owner, tags, error, script log head and tail), and
//! saved whole, as the consumer sent it, to `<save dir>/alert-<n>.json` when `--save` is given.
//! Every request is answered 204.
//!
//! ```text
//! cargo run -q -p testkit --example alert-receiver -- --port N [--save DIR]
//! ```
//!
//! Listens on 127.0.0.1:N (0: a free port) and prints one line once it listens:
//! `alert receiver listening on http://127.0.0.1:<port>`. Runs until killed.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;

const USAGE: &str = "usage: alert-receiver --port N [--save DIR]";

fn usage(problem: &str) -> ! {
    eprintln!("alert-receiver: {problem}\n{USAGE}");
    std::process::exit(2);
}

struct Receiver {
    save: Option<PathBuf>,
    received: AtomicUsize,
}

/// A field of the alert as text: a string as is, a list joined with commas, `-` when absent.
fn field(alert: &Value, key: &str) -> String {
    match alert.get(key) {
        None | Some(Value::Null) => "-".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect::<Vec<_>>()
            .join(", "),
        Some(other) => other.to_string(),
    }
}

/// The card printed for one alert.
fn card(n: usize, path: &str, alert: &Value) -> String {
    let mut out = format!("== alert {n} (POST {path})\n");
    for (label, key) in [
        ("app", "appName"),
        ("app id", "appId"),
        ("owner", "appOwnerName"),
        ("owner email", "appOwnerEmail"),
        ("tags", "appTags"),
        ("reload", "reloadId"),
        ("error", "errorMessage"),
        ("app URL", "appUrl"),
    ] {
        let _ = writeln!(out, "  {label:<12} {}", field(alert, key));
    }
    for (label, key) in [
        ("script log head", "scriptLogHead"),
        ("script log tail", "scriptLogTail"),
    ] {
        let _ = writeln!(out, "  {label}:");
        for line in field(alert, key).lines() {
            let _ = writeln!(out, "    | {line}");
        }
    }
    let missing = field(alert, "missing");
    if !missing.is_empty() {
        let _ = writeln!(out, "  missing      {missing}");
    }
    out
}

async fn receive(receiver: Arc<Receiver>, req: Request<Body>) -> StatusCode {
    let path = req.uri().path().to_owned();
    let body = to_bytes(req.into_body(), 16 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let n = receiver.received.fetch_add(1, Ordering::SeqCst) + 1;
    if let Some(dir) = &receiver.save {
        let file = dir.join(format!("alert-{n}.json"));
        if let Err(e) = std::fs::write(&file, &body) {
            eprintln!("alert-receiver: {}: {e}", file.display());
        }
    }
    let shown = match serde_json::from_slice::<Value>(&body) {
        Ok(alert) => card(n, &path, &alert),
        Err(_) => format!(
            "== alert {n} (POST {path}, not JSON)\n{}\n",
            String::from_utf8_lossy(&body)
        ),
    };
    // One print: alerts that arrive together are not interleaved.
    print!("{shown}");
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    let mut port = None;
    let mut save = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--port" => {
                let v = value();
                port = Some(
                    v.parse::<u16>()
                        .unwrap_or_else(|_| usage(&format!("not a port: {v}"))),
                );
            }
            "--save" => save = Some(PathBuf::from(value())),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let port = port.unwrap_or_else(|| usage("--port is required"));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| usage(&format!("cannot listen on 127.0.0.1:{port}: {e}")));
    let addr = listener.local_addr().expect("the listener's address");
    println!("alert receiver listening on http://{addr}");
    let receiver = Arc::new(Receiver {
        save,
        received: AtomicUsize::new(0),
    });
    let app = Router::new().fallback(move |req: Request<Body>| {
        let receiver = receiver.clone();
        async move { receive(receiver, req).await }
    });
    axum::serve(listener, app).await.expect("the receiver runs");
}
