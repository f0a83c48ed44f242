//! A program under test run as a child process: its stdout and stderr collected line by line,
//! waits for a line (failing early, with the output, if the process exits first), SIGTERM with
//! the time it took to end, SIGKILL. The process is killed when this is dropped.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// How long any single wait on a process may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// How a process ended after [`Process::terminate`].
#[derive(Debug)]
pub struct Ended {
    /// From SIGTERM to the end of the process.
    pub took: Duration,
    /// The exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Everything it wrote on stderr.
    pub log: String,
}

/// A child process with its output collected.
pub struct Process {
    pub child: Child,
    output: Arc<Output>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

#[derive(Default)]
struct Output {
    stdout: Mutex<Vec<String>>,
    stderr: Mutex<Vec<String>>,
    changed: Notify,
}

fn joined(lines: &Mutex<Vec<String>>) -> String {
    let lines = lines.lock().expect("output lock");
    lines.iter().map(|l| format!("{l}\n")).collect()
}

impl Process {
    /// Starts `command` (its arguments and environment as the caller set them) with stdin
    /// closed and both output streams collected. Must run inside a tokio runtime.
    pub fn spawn(mut command: Command) -> Process {
        let program = command.as_std().get_program().to_owned();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let output = Arc::new(Output::default());
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let readers = vec![
            tokio::spawn(collect_lines(stdout, Arc::clone(&output), false)),
            tokio::spawn(collect_lines(stderr, Arc::clone(&output), true)),
        ];
        Process {
            child,
            output,
            readers,
        }
    }

    /// Everything written on stdout so far, a line ending in `\n` each.
    pub fn stdout(&self) -> String {
        joined(&self.output.stdout)
    }

    /// Everything written on stderr so far (where the programs under test log), a line ending in
    /// `\n` each.
    pub fn stderr(&self) -> String {
        joined(&self.output.stderr)
    }

    /// Both streams, with every string in `secrets` masked, for assertion messages.
    pub fn output_redacted(&self, secrets: &[&str]) -> String {
        let mut text = format!(
            "--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        );
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            text = text.replace(secret, "<redacted>");
        }
        text
    }

    /// Whether the process has exited (without waiting).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits (bounded) until the output readers have seen the end of both streams.
    async fn drain(&mut self) {
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(WAIT, reader).await;
        }
    }

    /// Waits (bounded) for the process to exit and for all of its output to be collected.
    pub async fn wait_exit(&mut self, secrets: &[&str]) -> ExitStatus {
        let status = match tokio::time::timeout(WAIT, self.child.wait()).await {
            Ok(status) => status.expect("wait for child"),
            Err(_) => panic!(
                "process still running after {WAIT:?}\n{}",
                self.output_redacted(secrets)
            ),
        };
        self.drain().await;
        status
    }

    fn find_line(&self, pred: &impl Fn(&str) -> bool) -> Option<String> {
        let out = self.output.stdout.lock().expect("output lock");
        let err = self.output.stderr.lock().expect("output lock");
        out.iter().chain(err.iter()).find(|l| pred(l)).cloned()
    }

    /// Waits (bounded by [`WAIT`]) until a line on stdout or stderr, so far or to come,
    /// satisfies `pred`, and returns it. Fails with the output if the process exits first.
    pub async fn wait_until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        let output = Arc::clone(&self.output);
        loop {
            let notified = output.changed.notified();
            if let Some(line) = self.find_line(&pred) {
                return line;
            }
            if let Some(status) = self.exited() {
                // What it wrote before it exited may still be on its way to the readers.
                self.drain().await;
                if let Some(line) = self.find_line(&pred) {
                    return line;
                }
                panic!(
                    "process exited ({status}) before {what}\n{}",
                    self.output_redacted(&[])
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no {what} within {WAIT:?}\n{}", self.output_redacted(&[]));
            }
            // Woken by new output; the short bound also notices an exit that printed nothing.
            let _ = tokio::time::timeout(Duration::from_millis(250), notified).await;
        }
    }

    /// The first line (so far or to come) containing `needle`.
    pub async fn wait_for_line(&mut self, needle: &str) -> String {
        self.wait_until(&format!("line with `{needle}`"), |l| l.contains(needle))
            .await
    }

    /// Waits (bounded) until `addr` accepts TCP connections, failing early if the process exits.
    pub async fn wait_for_port(&mut self, addr: SocketAddr, secrets: &[&str]) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Some(status) = self.exited() {
                self.drain().await;
                panic!(
                    "process exited ({status}) instead of listening on {addr}\n{}",
                    self.output_redacted(secrets)
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "nothing listens on {addr} after {WAIT:?}\n{}",
                    self.output_redacted(secrets)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then waits (at most a minute) for the process to end.
    pub async fn terminate(mut self) -> Ended {
        let pid = self.child.id().expect("process still running");
        let started = Instant::now();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill -TERM runs");
        assert!(sent.success(), "kill -TERM {pid}");
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the process ends within a minute of SIGTERM\n{}",
                    self.output_redacted(&[])
                )
            })
            .expect("wait for the process");
        let took = started.elapsed();
        self.drain().await;
        Ended {
            took,
            code: status.code(),
            log: self.stderr(),
        }
    }

    /// SIGKILL: no chance to finish anything. Returns what it wrote on stderr.
    pub async fn kill(mut self) -> String {
        self.child.kill().await.expect("kill the process");
        let _ = self.child.wait().await;
        self.drain().await;
        self.stderr()
    }
}

async fn collect_lines(
    stream: impl tokio::io::AsyncRead + Unpin,
    output: Arc<Output>,
    is_stderr: bool,
) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let sink = if is_stderr {
            &output.stderr
        } else {
            &output.stdout
        };
        sink.lock().expect("output lock").push(line);
        output.changed.notify_waiters();
    }
    output.changed.notify_waiters();
}
