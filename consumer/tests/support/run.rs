//! The consumer run in-process (the pipeline with an observer) or as the real binary.

use std::path::Path;
use std::time::{Duration, Instant};

use consumer::pipeline::{RunEvent, RunOptions};
use consumer::transforms::Handled;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{Setup, WAIT};

pub struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), consumer::pipeline::RunError>>,
    events: mpsc::UnboundedReceiver<RunEvent>,
    /// Messages handled before the subscription was confirmed (a resumed session delivers
    /// what it kept before the SUBACK of the re-subscription arrives).
    early: std::collections::VecDeque<RunEvent>,
}

/// The alert and the outcome at each destination of an event that must have been alerted on.
pub fn alerted(
    handled: Handled,
) -> (
    Box<consumer::alert::Alert>,
    Vec<(String, consumer::delivery::Outcome)>,
) {
    match handled {
        Handled::Alerted { alert, outcomes } => (alert, outcomes),
        other => panic!("expected an alert, got {other:?}"),
    }
}

/// Starts the pipeline in this process and returns once it is subscribed.
pub async fn start(setup: &Setup) -> Running {
    let config = setup.config();
    let (tx, events) = mpsc::unbounded_channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        observer: Some(tx),
        source: None,
    };
    let task = tokio::spawn(consumer::pipeline::run(
        config,
        async move {
            let _ = stopped.await;
        },
        options,
    ));
    let mut running = Running {
        stop: Some(stop),
        task,
        events,
        early: Default::default(),
    };
    loop {
        match running.next_event().await {
            RunEvent::Subscribed => return running,
            other => running.early.push_back(other),
        }
    }
}

impl Running {
    async fn next_event(&mut self) -> RunEvent {
        tokio::time::timeout(WAIT, self.events.recv())
            .await
            .ok()
            .flatten()
            .expect("the consumer reports an event")
    }

    /// The next handled message (a message parked raw instead fails the test).
    pub async fn handled(&mut self) -> Handled {
        match self.next().await {
            RunEvent::Handled(h) => h,
            other => panic!("expected a handled message, got {other:?}"),
        }
    }

    /// The next message handled or parked raw.
    pub async fn next(&mut self) -> RunEvent {
        if let Some(event) = self.early.pop_front() {
            return event;
        }
        loop {
            match self.next_event().await {
                RunEvent::Subscribed => continue,
                other => return other,
            }
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let result = tokio::time::timeout(WAIT, self.task)
            .await
            .expect("consumer stops");
        result.expect("task").expect("consumer ran without error");
    }
}

/// Waits (bounded by [`WAIT`]) until the dead-letter directory is empty. A held alert (a digest
/// part is held from the start) leaves it once its delivery is confirmed, a moment after the
/// destination has it: stopping the consumer in between would leave it for the next start.
pub async fn until_nothing_parked(setup: &Setup) {
    let end = std::time::Instant::now() + WAIT;
    while !setup.parked_files().is_empty() {
        assert!(
            std::time::Instant::now() < end,
            "still parked or held: {:?}",
            setup.parked_files()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The real binary, run by [`spawn_binary`]; its log is its stderr.
pub type Binary = testkit::process::Process;

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_consumer")
}

/// The `consumer run` command for `setup`, logging at info without colours.
pub fn run_command_for(setup: &Setup) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary());
    command
        .arg("run")
        .arg("--config")
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1");
    command
}

/// Runs `consumer run` and returns once its log says it is subscribed.
pub async fn spawn_binary(setup: &Setup) -> Binary {
    let mut binary = Binary::spawn(run_command_for(setup));
    binary.wait_for_line("subscribed with QoS 1").await;
    binary
}

/// Waits until the log says what became of event `id`: alerted, or dropped as already
/// alerted on (here or by another consumer).
pub async fn wait_for_decision(consumer: &mut Binary, id: &str) {
    let alerted = format!("event {id:?}");
    let dropped = format!("event_id={id}");
    consumer
        .wait_until(&format!("decision on event {id}"), |l| {
            l.contains(&alerted) && l.contains("reload failed, alerting")
                || l.contains(&dropped) && l.contains("already alerted on")
        })
        .await;
}

/// Runs a consumer subcommand to completion; returns (exit code, stdout, stderr).
pub async fn run_command(setup: &Setup, args: &[&str]) -> (i32, String, String) {
    let output = tokio::process::Command::new(binary())
        .args(args)
        .arg("--config")
        .arg(&setup.butler)
        .arg("--extensions")
        .arg(&setup.extensions)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("consumer binary runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("read file")).expect("JSON file")
}

/// The consumer's `/metrics` text.
pub async fn metrics(port: u16) -> String {
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics server answers")
        .text()
        .await
        .expect("metrics body")
}

/// The value of the sample whose name and labels are exactly `series`, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Waits until `/metrics` shows `series` with a value `ok` accepts; returns the value.
pub async fn wait_for_metric(port: u16, series: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = metrics(port).await;
        if let Some(v) = sample(&text, series).filter(|v| ok(*v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "metric `{series}` never reached the expected value:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
