//! One destination's queue and worker: every sink gets one, so a slow or dead destination
//! never holds up another.
//!
//! An alert handed to a worker is released (its event may be acknowledged) once it was
//! delivered or is held durably, whichever comes first:
//! - **Memory queue.** Alerts are tried in order, with `retry.*` backoff between attempts. An
//!   alert still waiting or being tried after `redelivery.holdSeconds` is written to the
//!   dead-letter directory and released; the attempts go on, and a delivery removes the file.
//! - **Pause.** A `429` (or `503`) with `Retry-After` pauses the destination that long (at most
//!   [`MAX_PAUSE`]); it is not a failed attempt.
//! - **Circuit breaker.** An alert that fails every attempt with a transient error marks the
//!   destination down: what is queued is written to disk and released, and new alerts go
//!   straight there instead of waiting out retries. One probe — the first parked alert that is
//!   due — follows `redelivery.scheduleSeconds`; when it is delivered the destination is up
//!   again and its backlog drains in order, one alert at a time, before new alerts (which queue
//!   on disk behind it meanwhile). An alert refused for good (a `4xx`) is parked without
//!   marking the destination down: the next alerts are not to blame for it.
//! - **Redelivery.** Every parked alert of the destination is redelivered on the schedule, each
//!   on its own clock; past the schedule it stays parked for `consumer replay`. Files parked by
//!   other instances sharing the directory are picked up too; a lease in the state store makes
//!   sure one instance at a time redelivers a given file.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::dead_letter::{DeadLetter, ParkedAlert};
use super::retry::{Attempted, Failure, send_with_retry};
use super::schedule::{next_attempt, pause_for};
use super::{DeliveryError, Outcome};
use crate::alert::Alert;
use crate::settings::RetryConfig;
use crate::sinks::{SharedSink, SinkError};
use crate::state::{StateBackend, now_unix};

/// An alert for this destination, and where to say what became of it.
pub struct Job {
    pub alert: Arc<Alert>,
    pub done: oneshot::Sender<Result<Outcome, DeliveryError>>,
    /// Already held on disk (a digest part): delivered like an alert that waited past
    /// `holdSeconds`, its file removed once delivered.
    pub held: Option<PathBuf>,
}

/// What every worker shares.
#[derive(Clone)]
pub struct WorkerSettings {
    pub retry: RetryConfig,
    pub schedule: Vec<Duration>,
    pub hold: Duration,
    pub dead_letter: DeadLetter,
    pub store: Arc<dyn StateBackend>,
    /// Names this instance as the holder of redelivery leases.
    pub instance: String,
}

/// How long a redelivery lease lasts: longer than any one attempt, short enough that a dead
/// instance's files are taken over soon.
const LEASE: Duration = Duration::from_secs(600);
/// Alerts a worker keeps in memory. Beyond it, alerts already held on disk leave memory for the
/// durable queue (a destination that keeps asking to wait must not grow the queue without end).
const MAX_IN_MEMORY: usize = 256;
/// How often the dead-letter directory is looked at for files other instances parked.
const SCAN_EVERY: Duration = Duration::from_secs(30);
/// The shortest pause a `Retry-After` causes: `0`, or a date in the past, would have the worker
/// re-send in a tight loop for as long as the destination answers so.
const MIN_PAUSE: Duration = Duration::from_secs(1);

struct Entry {
    alert: Arc<Alert>,
    done: Option<oneshot::Sender<Result<Outcome, DeliveryError>>>,
    since: Instant,
    /// Failed attempts made so far (kept across pauses).
    attempts: u32,
    /// The file it is held in, once it waited past `holdSeconds`.
    held: Option<PathBuf>,
}

impl Entry {
    fn release(&mut self, outcome: Result<Outcome, DeliveryError>) {
        if let Some(done) = self.done.take() {
            // The event may have been given up (shutdown): nobody to tell.
            let _ = done.send(outcome);
        }
    }
}

/// A parked alert of this destination, as the worker tracks it.
struct Parked {
    path: PathBuf,
    parked_at: String,
    /// `None`: past the schedule, waiting for `consumer replay`.
    next_at: Option<u64>,
}

enum Trying {
    Queued,
    Redelivery {
        path: PathBuf,
        parked: Box<ParkedAlert>,
    },
}

enum Wake {
    Job(Option<Job>),
    Attempt(Attempted),
    Timer,
}

pub struct Worker {
    sink: SharedSink,
    rx: mpsc::Receiver<Job>,
    settings: WorkerSettings,
    queue: VecDeque<Entry>,
    parked: Vec<Parked>,
    /// Files looked at that belong to other destinations.
    foreign: HashSet<PathBuf>,
    trying: Option<(Trying, JoinHandle<Attempted>)>,
    paused_until: Option<Instant>,
    down: bool,
    /// Why the destination was marked down, for the alerts parked while it is.
    down_because: String,
    /// A redelivery just got through: the rest of the backlog goes now, in order, without
    /// waiting for each alert's time, and new alerts queue behind it.
    draining: bool,
    next_scan: Instant,
    /// When the leases of held alerts are taken again, so a long pause or slow attempts do not
    /// let them expire while this instance still tries those alerts.
    renew_held_at: Instant,
    /// Parked alerts were due but none could be taken (leased by another instance, or gone):
    /// look again no sooner than this.
    idle_until: Instant,
    open: bool,
}

impl Worker {
    pub fn new(sink: SharedSink, rx: mpsc::Receiver<Job>, settings: WorkerSettings) -> Self {
        Self {
            sink,
            rx,
            settings,
            queue: VecDeque::new(),
            parked: Vec::new(),
            foreign: HashSet::new(),
            trying: None,
            paused_until: None,
            down: false,
            down_because: String::new(),
            draining: false,
            next_scan: Instant::now(),
            idle_until: Instant::now(),
            renew_held_at: Instant::now() + LEASE / 3,
            open: true,
        }
    }

    fn name(&self) -> &str {
        self.sink.name()
    }

    /// Runs until the sending side is dropped (the consumer stops). What is in hand then stays
    /// as it is: held alerts are on disk, the others' events were not acknowledged.
    pub async fn run(mut self) {
        crate::metrics::global().init_destination(self.name());
        crate::metrics::global().set_destination_up(self.name(), true);
        loop {
            self.start_next().await;
            if !self.open && self.queue.is_empty() && self.trying.is_none() {
                break;
            }
            let wake_at = self.wake_at();
            let wake = {
                let rx = &mut self.rx;
                let trying = &mut self.trying;
                let open = self.open;
                tokio::select! {
                    job = rx.recv(), if open => Wake::Job(job),
                    result = async {
                        match trying.as_mut() {
                            Some((_, handle)) => handle.await,
                            None => std::future::pending().await,
                        }
                    }, if trying.is_some() => Wake::Attempt(result.unwrap_or_else(|e| {
                        Attempted::Failed(Failure {
                            attempts: 1,
                            error: SinkError::Permanent(format!("the send ended abnormally: {e}")),
                        })
                    })),
                    () = tokio::time::sleep_until(wake_at) => Wake::Timer,
                }
            };
            match wake {
                Wake::Job(Some(job)) => self.accept(job).await,
                Wake::Job(None) => {
                    self.open = false;
                    // Nobody waits for what is in memory any more: stop here.
                    if let Some((_, handle)) = self.trying.take() {
                        handle.abort();
                    }
                    self.queue.clear();
                }
                Wake::Attempt(result) => {
                    if let Some((trying, _)) = self.trying.take() {
                        self.finished(trying, result).await;
                    }
                }
                Wake::Timer => {}
            }
            self.hold_due().await;
            self.spill().await;
            if Instant::now() >= self.renew_held_at {
                self.renew_held_leases().await;
            }
            if Instant::now() >= self.next_scan {
                self.scan().await;
            }
            self.report_depth();
        }
    }

    fn paused(&self) -> bool {
        self.paused_until
            .is_some_and(|until| until > Instant::now())
    }

    /// Parked alerts that are not past the schedule: the destination's backlog.
    fn backlog(&self) -> usize {
        self.parked.iter().filter(|p| p.next_at.is_some()).count()
    }

    fn report_depth(&self) {
        crate::metrics::global()
            .set_destination_queue(self.name(), self.queue.len() + self.parked.len());
    }

    /// The next moment something is due: a held deadline, the end of a pause, a redelivery, a
    /// scan.
    fn wake_at(&self) -> Instant {
        let mut at = self.next_scan.min(self.renew_held_at);
        if let Some(hold) = self
            .queue
            .iter()
            .filter(|e| e.held.is_none())
            .map(|e| e.since + self.settings.hold)
            .min()
        {
            at = at.min(hold);
        }
        if let Some(until) = self.paused_until {
            at = at.min(until.max(Instant::now()));
        }
        if self.trying.is_none()
            && let Some(due) = self.parked.iter().filter_map(|p| p.next_at).min()
        {
            // Draining, the whole backlog goes now; else each alert waits for its time.
            let wait = if self.draining {
                0
            } else {
                due.saturating_sub(now_unix())
            };
            let due = (Instant::now() + Duration::from_secs(wait)).max(self.idle_until);
            at = at.min(due);
        }
        at
    }

    async fn accept(&mut self, job: Job) {
        if self.down && self.backlog() == 0 {
            // Nothing parked left to probe with (replayed, or past the schedule): the next
            // alert is the probe, tried as usual.
            self.down = false;
            crate::metrics::global().set_destination_up(self.name(), true);
            tracing::info!(
                sink = self.name(),
                "no parked alert left to probe the destination with; trying new alerts again"
            );
        }
        if let Some(path) = &job.held {
            // Ours while we try it; another instance takes it over only if we die.
            self.take_lease(path).await;
        }
        let mut entry = Entry {
            alert: job.alert,
            done: Some(job.done),
            since: Instant::now(),
            attempts: 0,
            held: job.held,
        };
        if self.down || (self.draining && self.backlog() > 0) {
            // Down: do not wait out retries. Draining a backlog: queue behind it, in order.
            let why = if self.down {
                format!(
                    "destination is down; parked for redelivery (last error: {})",
                    self.down_because
                )
            } else {
                "queued behind the destination's parked alerts".to_owned()
            };
            self.park(&mut entry, &why, 0, 0).await;
            return;
        }
        self.queue.push_back(entry);
    }

    /// Starts an attempt when none runs and the destination is not paused: a due redelivery
    /// first (the backlog goes before new alerts), else the front of the memory queue.
    async fn start_next(&mut self) {
        if self.trying.is_some() || self.paused() {
            return;
        }
        self.paused_until = None;
        let now = now_unix();
        let mut due: Vec<&Parked> = self
            .parked
            .iter()
            .filter(|p| p.next_at.is_some_and(|at| self.draining || at <= now))
            .collect();
        due.sort_by(|a, b| (&a.parked_at, &a.path).cmp(&(&b.parked_at, &b.path)));
        let candidates: Vec<PathBuf> = due.into_iter().map(|p| p.path.clone()).collect();
        // None of the due ones could be taken a moment ago: look again later, and serve the
        // memory queue meanwhile (returning here held new alerts up for the whole pause).
        let candidates = if Instant::now() < self.idle_until {
            Vec::new()
        } else {
            candidates
        };
        let tried = !candidates.is_empty();
        // A `consumer replay` running now re-sends these files itself: leave them to it this
        // round. (Looked at, not held: the workers of other destinations need it too.)
        let replaying = tried && self.settings.dead_letter.replay_running();
        if replaying {
            tracing::debug!(
                sink = self.name(),
                "a replay holds the dead-letter lock; redelivery waits"
            );
        }
        let candidates = if replaying { Vec::new() } else { candidates };
        for path in candidates {
            if !self.take_lease(&path).await {
                continue;
            }
            match DeadLetter::read(&path) {
                Ok(parked) if parked.sink == self.name() && !parked.exhausted => {
                    let sink = Arc::clone(&self.sink);
                    let alert = parked.alert.clone();
                    let once = RetryConfig {
                        max_attempts: 1,
                        ..self.settings.retry.clone()
                    };
                    let handle = tokio::spawn(async move {
                        send_with_retry(sink.as_ref(), &alert, &once, 0).await
                    });
                    self.trying = Some((
                        Trying::Redelivery {
                            path,
                            parked: Box::new(parked),
                        },
                        handle,
                    ));
                    return;
                }
                // Replayed, removed or changed by someone else meanwhile.
                _ => {
                    self.parked.retain(|p| p.path != path);
                    self.give_lease(&path).await;
                }
            }
        }
        if tried {
            self.idle_until = Instant::now() + Duration::from_secs(2);
        }
        if self.down || (self.draining && self.backlog() > 0) {
            return;
        }
        if let Some(front) = self.queue.front() {
            let sink = Arc::clone(&self.sink);
            let alert = Arc::clone(&front.alert);
            let policy = self.settings.retry.clone();
            let made = front.attempts;
            let handle =
                tokio::spawn(
                    async move { send_with_retry(sink.as_ref(), &alert, &policy, made).await },
                );
            self.trying = Some((Trying::Queued, handle));
        }
    }

    async fn finished(&mut self, trying: Trying, result: Attempted) {
        match trying {
            Trying::Queued => self.finished_queued(result).await,
            Trying::Redelivery { path, parked } => {
                self.finished_redelivery(path, *parked, result).await;
            }
        }
    }

    async fn finished_queued(&mut self, result: Attempted) {
        let name = self.name().to_owned();
        match result {
            Attempted::Delivered { attempts } => {
                let Some(mut entry) = self.queue.pop_front() else {
                    return;
                };
                if let Some(path) = entry.held.take() {
                    remove_quietly(&path);
                    self.give_lease(&path).await;
                }
                tracing::info!(
                    sink = name.as_str(),
                    attempts,
                    "{}: alert delivered",
                    entry.alert.describe()
                );
                crate::metrics::global().alert(
                    &name,
                    "delivered",
                    entry.alert.event_time.as_deref(),
                );
                entry.release(Ok(Outcome::Delivered { attempts }));
            }
            Attempted::Throttled {
                attempts,
                retry_after,
                error,
            } => {
                if let Some(front) = self.queue.front_mut() {
                    front.attempts = attempts;
                }
                self.pause(retry_after, &error);
            }
            Attempted::Failed(Failure { attempts, error }) => {
                let Some(mut entry) = self.queue.pop_front() else {
                    return;
                };
                let message = error.to_string();
                self.park(&mut entry, &message, attempts, 0).await;
                if let Some(path) = &entry.held {
                    self.give_lease(&path.clone()).await;
                }
                // Without a schedule nothing would ever probe the destination: it would stay
                // down, every later alert parked untried, until a restart.
                if matches!(error, SinkError::Transient(_)) && !self.settings.schedule.is_empty() {
                    self.mark_down(&message).await;
                }
            }
        }
    }

    async fn finished_redelivery(
        &mut self,
        path: PathBuf,
        mut parked: ParkedAlert,
        result: Attempted,
    ) {
        let name = self.name().to_owned();
        let metrics = crate::metrics::global();
        match result {
            Attempted::Delivered { .. } => {
                match DeadLetter::remove(&path) {
                    Ok(()) => {}
                    Err(e) => tracing::error!(
                        sink = name.as_str(),
                        "{}: redelivered, but {e}; it may be sent again",
                        parked.alert.describe()
                    ),
                }
                self.parked.retain(|p| p.path != path);
                self.give_lease(&path).await;
                metrics.redelivery(&name, "delivered");
                // Drain what is left of the backlog now; once it is empty, alerts parked later
                // wait for their schedule again.
                self.draining = self.backlog() > 0;
                tracing::info!(
                    sink = name.as_str(),
                    redeliveries = parked.redeliveries + 1,
                    "{}: parked alert redelivered",
                    parked.alert.describe()
                );
                if self.down {
                    self.down = false;
                    metrics.set_destination_up(&name, true);
                    tracing::warn!(
                        sink = name.as_str(),
                        backlog = self.backlog(),
                        "destination is back up; its parked alerts are redelivered in order"
                    );
                }
            }
            Attempted::Throttled {
                retry_after, error, ..
            } => {
                self.give_lease(&path).await;
                self.pause(retry_after, &error);
            }
            Attempted::Failed(Failure { error, .. }) => {
                self.draining = false;
                let message = error.to_string();
                self.reschedule(&path, &mut parked, &message).await;
                self.give_lease(&path).await;
                let transient = matches!(error, SinkError::Transient(_));
                if !self.down && transient {
                    self.mark_down(&message).await;
                }
                if self.down && !transient {
                    // The destination answered: it is up, and refuses this alert alone. The
                    // others go on their own schedule instead of waiting behind this one.
                    self.down = false;
                    metrics.set_destination_up(&name, true);
                    tracing::warn!(
                        sink = name.as_str(),
                        backlog = self.backlog(),
                        "destination is back up (it refused one parked alert for good: {message})"
                    );
                }
                if self.down {
                    // The destination, not the alert, failed: every other alert already due
                    // would fail alike, so each counts this probe as its own try.
                    self.defer_due(&path, &message).await;
                }
            }
        }
    }

    fn pause(&mut self, retry_after: Duration, error: &SinkError) {
        let pause = pause_for(retry_after).max(MIN_PAUSE);
        crate::metrics::global().throttled(self.name());
        tracing::warn!(
            sink = self.name(),
            "destination asked to slow down; pausing it for {pause:?} (not counted as a failed attempt): {error}"
        );
        self.paused_until = Some(Instant::now() + pause);
    }

    /// Circuit open: park what is queued (releasing its events) and send new alerts straight
    /// to the durable queue until a probe gets through.
    async fn mark_down(&mut self, error: &str) {
        self.down = true;
        // A drain from an earlier recovery is over: the probe waits for the schedule.
        self.draining = false;
        self.down_because = error.to_owned();
        crate::metrics::global().set_destination_up(self.name(), false);
        tracing::error!(
            sink = self.name(),
            queued = self.queue.len(),
            "destination is down: its alerts are parked and redelivered on the schedule \
             (first probe in {:?}). Last error: {error}",
            self.settings.schedule.first().copied().unwrap_or_default()
        );
        if let Some((Trying::Queued, handle)) = &self.trying {
            handle.abort();
            self.trying = None;
        }
        let queued: Vec<Entry> = self.queue.drain(..).collect();
        let why = format!("destination is down; parked for redelivery (last error: {error})");
        for mut entry in queued {
            let attempts = entry.attempts;
            self.park(&mut entry, &why, attempts, 0).await;
            if let Some(path) = &entry.held {
                self.give_lease(&path.clone()).await;
            }
        }
    }

    /// Writes an alert to the durable queue with its first redelivery scheduled, adds it to the
    /// backlog and releases its event. Parking that fails leaves the event unacknowledged.
    async fn park(&mut self, entry: &mut Entry, error: &str, attempts: u32, redeliveries: u32) {
        let name = self.name().to_owned();
        let now = now_unix();
        let next_at = next_attempt(now, redeliveries, &self.settings.schedule);
        let parked = ParkedAlert {
            redeliveries,
            next_attempt_at: next_at,
            exhausted: next_at.is_none(),
            ..ParkedAlert::new(&name, &entry.alert, attempts, error)
        };
        match self.settings.dead_letter.write(&parked).await {
            Ok(path) => {
                tracing::error!(
                    sink = name.as_str(),
                    attempts,
                    parked = %path.display(),
                    "{}: alert parked; {}. Last error: {error}",
                    entry.alert.describe(),
                    match next_at {
                        Some(at) => format!("redelivered automatically in {}s", at.saturating_sub(now)),
                        None => "`consumer replay` re-sends it".to_owned(),
                    }
                );
                crate::metrics::global().alert(&name, "parked", None);
                self.parked.retain(|p| p.path != path);
                self.parked.push(Parked {
                    path: path.clone(),
                    parked_at: parked.parked_at,
                    next_at,
                });
                entry.release(Ok(Outcome::Parked {
                    path,
                    error: error.to_owned(),
                }));
            }
            Err(park) => {
                tracing::error!(sink = name.as_str(), "{}: {park}", entry.alert.describe());
                entry.release(Err(DeliveryError {
                    sink: name,
                    error: error.to_owned(),
                    park,
                }));
            }
        }
    }

    /// After a failed redelivery: the next step of the schedule, or parked for `replay`.
    async fn reschedule(&mut self, path: &Path, parked: &mut ParkedAlert, error: &str) {
        let name = self.name().to_owned();
        parked.redeliveries = parked.redeliveries.saturating_add(1);
        parked.attempts = parked.attempts.saturating_add(1);
        parked.error = error.to_owned();
        parked.next_attempt_at =
            next_attempt(now_unix(), parked.redeliveries, &self.settings.schedule);
        parked.exhausted = parked.next_attempt_at.is_none();
        let metrics = crate::metrics::global();
        if parked.exhausted {
            metrics.redelivery(&name, "exhausted");
            tracing::error!(
                sink = name.as_str(),
                parked = %path.display(),
                redeliveries = parked.redeliveries,
                "{}: redelivery schedule used up; the alert stays parked for `consumer replay`. Last error: {error}",
                parked.alert.describe()
            );
        } else {
            metrics.redelivery(&name, "failed");
            tracing::warn!(
                sink = name.as_str(),
                redeliveries = parked.redeliveries,
                "{}: redelivery failed, next in {}s: {error}",
                parked.alert.describe(),
                parked
                    .next_attempt_at
                    .unwrap_or_default()
                    .saturating_sub(now_unix())
            );
        }
        if let Err(e) = DeadLetter::update(path, parked) {
            tracing::error!(sink = name.as_str(), "{e}");
        }
        if let Some(entry) = self.parked.iter_mut().find(|p| p.path == path) {
            entry.next_at = parked.next_attempt_at;
        }
    }

    /// Reschedules every other parked alert that was due, as if it had been tried.
    async fn defer_due(&mut self, tried: &Path, error: &str) {
        let now = now_unix();
        let due: Vec<PathBuf> = self
            .parked
            .iter()
            .filter(|p| p.path != tried && p.next_at.is_some_and(|at| at <= now))
            .map(|p| p.path.clone())
            .collect();
        for path in due {
            // Another instance may be redelivering (or have just removed) it: only rewrite a
            // file held under our own lease.
            if !self.take_lease(&path).await {
                continue;
            }
            if let Ok(mut parked) = DeadLetter::read(&path) {
                self.reschedule(&path, &mut parked, error).await;
            }
            self.give_lease(&path).await;
        }
    }

    /// Writes every alert that waited past `holdSeconds` to disk and releases its event; the
    /// worker goes on trying it.
    async fn hold_due(&mut self) {
        let now = Instant::now();
        let hold = self.settings.hold;
        let name = self.name().to_owned();
        for index in 0..self.queue.len() {
            let entry = &self.queue[index];
            if entry.held.is_some() || entry.since + hold > now {
                continue;
            }
            let held = format!(
                "held: not delivered within {}s (holdSeconds); delivery goes on",
                hold.as_secs()
            );
            let parked = ParkedAlert::held(
                &name,
                &entry.alert,
                entry.attempts,
                &held,
                &self.settings.schedule,
            );
            let path = self.settings.dead_letter.path_for(&name, &entry.alert);
            // Ours while we try it; another instance takes it over only if we die.
            self.take_lease(&path).await;
            let written = self.settings.dead_letter.write(&parked).await;
            let entry = &mut self.queue[index];
            match written {
                Ok(path) => {
                    tracing::info!(
                        sink = name.as_str(),
                        held = %path.display(),
                        "{}: not delivered within {}s; held on disk so its event can be acknowledged, delivery goes on",
                        entry.alert.describe(),
                        hold.as_secs()
                    );
                    entry.held = Some(path.clone());
                    entry.release(Ok(Outcome::Held { path }));
                }
                Err(e) => {
                    // Not durable: the event waits (unacknowledged) for the delivery itself.
                    tracing::error!(
                        sink = name.as_str(),
                        "{}: cannot hold it on disk: {e}",
                        entry.alert.describe()
                    );
                    entry.since = now;
                }
            }
        }
    }

    /// Looks for parked alerts of this destination: at start, and from time to time for those
    /// other instances parked in a shared directory.
    async fn scan(&mut self) {
        self.next_scan = Instant::now() + SCAN_EVERY;
        let files = match self.settings.dead_letter.list() {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(sink = self.name(), "{e}");
                return;
            }
        };
        let present: HashSet<&PathBuf> = files.iter().collect();
        self.parked.retain(|p| present.contains(&p.path));
        self.foreign.retain(|p| present.contains(p));
        let known: HashSet<PathBuf> = self
            .parked
            .iter()
            .map(|p| p.path.clone())
            .chain(self.queue.iter().filter_map(|e| e.held.clone()))
            .collect();
        for path in files {
            if known.contains(&path) || self.foreign.contains(&path) {
                continue;
            }
            match DeadLetter::read(&path) {
                Ok(parked) if parked.sink == self.name() => {
                    let next_at = if parked.exhausted {
                        None
                    } else {
                        // Files from before automatic redelivery carry no time: as if just parked.
                        parked.next_attempt_at.or_else(|| {
                            next_attempt(now_unix(), parked.redeliveries, &self.settings.schedule)
                        })
                    };
                    self.parked.push(Parked {
                        path,
                        parked_at: parked.parked_at,
                        next_at,
                    });
                }
                Ok(_) => {
                    self.foreign.insert(path);
                }
                // Unreadable files are `replay --list`'s to show.
                Err(_) => {
                    self.foreign.insert(path);
                }
            }
        }
    }

    /// Moves held alerts from the back of an overlong memory queue to the durable queue, where
    /// they are redelivered on the schedule (the front, perhaps being tried, stays).
    async fn spill(&mut self) {
        while self.queue.len() > MAX_IN_MEMORY {
            let Some(held) = self.queue.back().and_then(|e| e.held.clone()) else {
                break;
            };
            self.queue.pop_back();
            self.give_lease(&held).await;
            let parked_at = DeadLetter::read(&held)
                .map(|p| p.parked_at)
                .unwrap_or_default();
            self.parked.push(Parked {
                path: held,
                parked_at,
                next_at: next_attempt(now_unix(), 0, &self.settings.schedule),
            });
        }
    }

    async fn renew_held_leases(&mut self) {
        self.renew_held_at = Instant::now() + LEASE / 3;
        let held: Vec<PathBuf> = self.queue.iter().filter_map(|e| e.held.clone()).collect();
        for path in held {
            if !self.take_lease(&path).await {
                tracing::warn!(
                    sink = self.name(),
                    held = %path.display(),
                    "another instance holds the lease of an alert this one is still trying; it may be sent twice"
                );
            }
        }
    }

    fn lease_name(path: &Path) -> String {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("redeliver:{file}")
    }

    async fn take_lease(&self, path: &Path) -> bool {
        self.settings
            .store
            .lease(&Self::lease_name(path), &self.settings.instance, LEASE)
            .await
    }

    async fn give_lease(&self, path: &Path) {
        self.settings
            .store
            .unlease(&Self::lease_name(path), &self.settings.instance)
            .await;
    }
}

fn remove_quietly(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::error!(
            held = %path.display(),
            "delivered, but cannot remove the held copy ({e}); it may be sent again"
        );
    }
}
