//! The running consumer: everything is built once ([`Consumer::build`]), then a loop only
//! moves messages: source → transforms (up to `concurrency` messages at once) → each
//! destination's own queue ([`crate::delivery`]) → acknowledgement.
//!
//! Acknowledgements go out in the order the messages came (MQTT 3.1.1, 4.6: PUBACKs in the
//! order of the PUBLISHes): a message finished early waits for the ones before it. With
//! `concurrency: 1` messages are handled one after the other, as before. Two events about one
//! reload handled at once are one alert: the second waits for the first's claim.
//!
//! Isolation: a panic or an error while handling one message does not end the process. The
//! message is parked raw with the reason ([`crate::delivery::parked_message`]), acknowledged in
//! its turn, and the others go on. Only when even that parking fails (disk full) does the
//! consumer stop with the message unacknowledged, so the broker keeps it.
//!
//! Shutdown (SIGTERM): no new message is taken; those in hand get `shutdownGraceSeconds` to
//! finish. After that they are left unacknowledged — with a persistent session the broker sends
//! them again on the next start, and dedupe keeps an alert that already went out from going
//! out twice — or, without a persistent session (the broker would forget them), parked raw.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::ConsumerConfig;
use crate::delivery::parked_message::{ParkMessageError, ParkedMessage, park_message};
use crate::delivery::{DeadLetter, Deliveries, DeliveryError, WorkerSettings};
use crate::metrics_server::{self, NotReady, Probe, ServeError};
use crate::sinks::{self, BuildError, Purpose};
use crate::source::{Message, Received, Source, SourceConfig, SourceError};
use crate::state::{Claims, StateBackend, StoreError};
use crate::transforms::enrich::Enricher;
use crate::transforms::{Handled, Transforms};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Sinks(#[from] BuildError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error("tenant API client: {0}")]
    Enrich(#[from] crate::enrich::EnrichError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    StoreCheck(#[from] crate::state::redis_store::ServerCheckError),
    #[error(transparent)]
    Metrics(#[from] ServeError),
    /// A tenant's configured `id` cannot be resolved to its tenant id (JWT refused, an
    /// answer without `tenantId`): the configuration must change.
    #[error("{0}")]
    TenantId(crate::config::Problem),
    #[error("state directory {path}: {reason}")]
    StateDir { path: String, reason: String },
    #[error("{error}; and {park}; message left unacknowledged, stopping")]
    Park {
        error: String,
        park: ParkMessageError,
    },
}

impl RunError {
    /// Whether this is something `check-config` reports as invalid (a destination that does not
    /// build, e.g. a template that does not compile; broker certificates that do not load; a
    /// tenant id that cannot be resolved): the configuration must change, and `run` exits as
    /// `check-config` does ([`crate::exit::CONFIG_INVALID`]) so a supervisor does not restart
    /// it in vain.
    pub fn is_config_problem(&self) -> bool {
        matches!(
            self,
            RunError::Sinks(_) | RunError::Source(SourceError::Settings(_)) | RunError::TenantId(_)
        )
    }
}

/// What a running consumer reports to an observer.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The broker granted the subscription.
    Subscribed,
    /// A message was handled and acknowledged.
    Handled(Handled),
    /// Handling a message panicked or failed: it was parked raw and acknowledged.
    Parked { topic: String, reason: String },
    /// The webhook watchdog checked a tenant.
    WatchdogChecked(Box<crate::watchdog::TenantReport>),
}

/// Hooks for embedding and tests.
#[derive(Default)]
pub struct RunOptions {
    /// Told when subscribed and about every message after it was acknowledged.
    pub observer: Option<mpsc::UnboundedSender<RunEvent>>,
    /// Overrides the reconnect backoff (tests use short pauses).
    pub source: Option<SourceConfig>,
}

fn ensure_dir(path: &std::path::Path) -> Result<(), RunError> {
    crate::state::create_private_dir(path).map_err(|e| RunError::StateDir {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// A consumer with everything built from its configuration, not yet connected.
pub struct Consumer {
    config: Arc<ConsumerConfig>,
    store: Arc<dyn StateBackend>,
    sinks: Vec<sinks::SharedSink>,
    enricher: Enricher,
}

impl Consumer {
    /// Builds sinks, the state store and the tenant API clients; connects to nothing.
    pub fn build(config: ConsumerConfig) -> Result<Self, RunError> {
        ensure_dir(&config.consumer.state_dir)?;
        ensure_dir(&config.consumer.dead_letter_dir)?;
        let store = config.open_state()?;
        let sinks = config.build_sinks(Purpose::Run)?;
        let enricher = Enricher::new(&config)?;
        Ok(Self {
            config: Arc::new(config),
            store,
            sinks,
            enricher,
        })
    }

    /// Runs until `shutdown` completes (then disconnects cleanly) or a fatal error.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()>,
        options: RunOptions,
    ) -> Result<(), RunError> {
        let source_config = options
            .source
            .unwrap_or_else(|| SourceConfig::from_config(&self.config));
        tracing::info!(
            broker = %source_config.broker.display_url(),
            client_id = %source_config.broker.client_id,
            filter = %source_config.filter,
            persistent_session = !self.config.broker.clean_session,
            "subscribing"
        );
        self.drive(|| Source::start(source_config), shutdown, options.observer)
            .await
    }

    /// Metrics, the ids of tenants given by hostname ([`resolve_tenant_ids`]), the
    /// destinations' workers, then the source (`connect`), and the loop that moves messages from
    /// it through the transforms to their acknowledgement. The metrics server is up before the
    /// subscription, so a probe never finds it missing once subscribed, and says why the
    /// consumer is not ready while a tenant id is being resolved.
    async fn drive(
        self,
        connect: impl FnOnce() -> Result<Source, SourceError>,
        shutdown: impl Future<Output = ()>,
        observer: Option<mpsc::UnboundedSender<RunEvent>>,
    ) -> Result<(), RunError> {
        let Consumer {
            config,
            store,
            sinks,
            enricher,
        } = self;
        tokio::pin!(shutdown);
        let names: Vec<&str> = sinks.iter().map(|s| s.name()).collect();
        tracing::info!(
            sinks = %names.join(", "),
            state_dir = %config.consumer.state_dir.display(),
            state_store = %store.describe(),
            dead_letter_dir = %config.consumer.dead_letter_dir.display(),
            remembered_events = store.remembered(),
            concurrency = config.consumer.concurrency,
            "state and destinations ready"
        );
        if let Some(redis) = store.redis() {
            use crate::state::redis_store::ServerCheckError;
            match redis.check_server().await {
                Ok(info) => tracing::info!(
                    store = %redis.display(),
                    server = %info.server,
                    version = %info.version,
                    "state store checked"
                ),
                // Not fatal: the store is retried when used, and /healthz says it is down.
                Err(e @ ServerCheckError::Unreachable { .. }) => tracing::warn!("{e}"),
                Err(e) => return Err(e.into()),
            }
        }
        let not_ready = NotReady::default();
        let _metrics = match config.consumer.ha.metrics_listen {
            Some(addr) => Some(
                metrics_server::start(
                    addr,
                    Probe {
                        store: store.redis().cloned(),
                        dead_letter_dir: config.consumer.dead_letter_dir.clone(),
                        not_ready: not_ready.clone(),
                    },
                )
                .await?,
            ),
            None => None,
        };
        // Tenants given by hostname get their ids before anything subscribes: nothing is
        // acknowledged for a tenant whose id is unknown (the broker keeps the messages in the
        // persistent session meanwhile). The destinations are built again for those ids.
        let (config, sinks, enricher) = if config.tenants.iter().any(|t| t.needs_tenant_id()) {
            let resolved = tokio::select! {
                resolved = resolve_tenant_ids(&config, &not_ready) => resolved?,
                () = &mut shutdown => {
                    tracing::info!("stopped before every tenant id was resolved");
                    return Ok(());
                }
            };
            let sinks = resolved.build_sinks(Purpose::Run)?;
            let enricher = Enricher::new(&resolved)?;
            (Arc::new(resolved), sinks, enricher)
        } else {
            (config, sinks, enricher)
        };
        let (deliveries, mut workers) = Deliveries::start(sinks, &worker_settings(&config, &store));
        if let Some(watchdog) = crate::watchdog::Watchdog::new(
            &config,
            Arc::clone(&store),
            Arc::clone(&deliveries),
            &config.broker.client_id,
            observer.clone().map(|tx| {
                Box::new(move |report| {
                    let _ = tx.send(RunEvent::WatchdogChecked(Box::new(report)));
                }) as crate::watchdog::Observer
            }),
        ) {
            workers.push(tokio::spawn(watchdog.run()));
        }
        let claims = Claims::new(
            Arc::clone(&store),
            &config.broker.client_id,
            config.consumer.ha.claim_lease,
            config.consumer.dedupe.retention,
        );
        let transforms = Arc::new(Transforms::new(
            Arc::clone(&config),
            claims,
            enricher,
            deliveries,
        ));
        let source = connect()?;
        let mut engine = Engine {
            config: Arc::clone(&config),
            transforms,
            observer,
            in_flight: JoinSet::new(),
            tasks: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            acks: Acker::start(),
        };
        let result = engine.run(source, shutdown).await;
        // In-flight handling ends here (its claims are released); the workers stop once their
        // queues' senders are gone. Held and parked alerts are on disk.
        engine.in_flight.shutdown().await;
        drop(engine);
        for worker in workers {
            worker.abort();
        }
        result
    }
}

/// First pause between two attempts to resolve a tenant id; it doubles up to [`RESOLVE_MAX`].
const RESOLVE_FIRST: std::time::Duration = std::time::Duration::from_secs(1);
const RESOLVE_MAX: std::time::Duration = std::time::Duration::from_secs(60);

/// `config` with every tenant given by hostname resolved ([`crate::tenant_id`]), trying again
/// (1 s doubling to 60 s) while the tenant API is unavailable, each failure logged with its
/// reason and shown by `/healthz` (`not_ready`). A refused JWT or an answer without a tenant id
/// is final ([`RunError::TenantId`]).
async fn resolve_tenant_ids(
    config: &ConsumerConfig,
    not_ready: &NotReady,
) -> Result<ConsumerConfig, RunError> {
    use crate::tenant_id;
    let pending: Vec<(usize, &crate::config::TenantConfig)> = config
        .tenants
        .iter()
        .enumerate()
        .filter(|(_, t)| t.needs_tenant_id())
        .collect();
    for (_, tenant) in &pending {
        not_ready.set(
            &tenant.id,
            format!(
                "tenant {}: tenant id not resolved yet (not asked yet)",
                tenant.id
            ),
        );
    }
    let mut resolved = Vec::new();
    for (index, tenant) in pending {
        let mut pause = RESOLVE_FIRST;
        loop {
            match tenant_id::resolve(tenant, &config.consumer.enrichment).await {
                Ok(id) => {
                    tracing::info!(
                        tenant = %tenant.id,
                        tenant_id = %id,
                        key = %tenant.key_path,
                        "tenant id resolved: {} → {id}",
                        tenant.id
                    );
                    not_ready.clear(&tenant.id);
                    resolved.push((index, id));
                    break;
                }
                Err(e) if e.is_final() => {
                    return Err(RunError::TenantId(tenant_id::problem(tenant, &e)));
                }
                Err(e) => {
                    tracing::warn!(
                        tenant = %tenant.id,
                        key = %tenant.key_path,
                        retry_in = ?pause,
                        "tenant id not resolved yet, nothing is subscribed meanwhile: {e}"
                    );
                    not_ready.set(
                        &tenant.id,
                        format!("tenant {}: tenant id not resolved yet ({e})", tenant.id),
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(RESOLVE_MAX);
                }
            }
        }
    }
    tenant_id::apply(config, &resolved).map_err(RunError::TenantId)
}

/// Runs a consumer: [`Consumer::build`], then [`Consumer::run`].
pub async fn run(
    config: ConsumerConfig,
    shutdown: impl Future<Output = ()>,
    options: RunOptions,
) -> Result<(), RunError> {
    Consumer::build(config)?.run(shutdown, options).await
}

fn worker_settings(config: &ConsumerConfig, store: &Arc<dyn StateBackend>) -> WorkerSettings {
    WorkerSettings {
        retry: config.consumer.retry.clone(),
        schedule: config.consumer.redelivery.schedule.clone(),
        hold: config.consumer.redelivery.hold,
        dead_letter: DeadLetter::new(&config.consumer.dead_letter_dir),
        store: Arc::clone(store),
        // The client id, stable across restarts and unique per consumer: a restarted consumer
        // takes back the leases of the files it was holding, instead of waiting for them to
        // expire.
        instance: config.broker.client_id.clone(),
    }
}

/// Every destination's queue and worker, as `consumer run` builds them, for tests that deliver
/// one alert. (`replay` builds the sinks alone: workers would redeliver on their own.)
pub fn delivery_for(config: &ConsumerConfig) -> Result<Arc<Deliveries>, RunError> {
    let store = config.open_state()?;
    let (deliveries, _workers) = Deliveries::start(
        config.build_sinks(Purpose::Run)?,
        &worker_settings(config, &store),
    );
    Ok(deliveries)
}

/// A message in hand, in arrival order.
struct InHand {
    message: Box<Message>,
    /// `None` while it is being handled.
    finished: Option<Finished>,
}

enum Finished {
    Handled(Handled),
    /// Not handled (an error or a panic): park it raw, then acknowledge.
    Failed(String),
}

struct Engine {
    config: Arc<ConsumerConfig>,
    acks: Acker,
    transforms: Arc<Transforms>,
    observer: Option<mpsc::UnboundedSender<RunEvent>>,
    in_flight: JoinSet<(u64, Result<Handled, DeliveryError>)>,
    /// Task id → sequence number, to place a panic.
    tasks: HashMap<tokio::task::Id, u64>,
    order: BTreeMap<u64, InHand>,
    next_seq: u64,
}

impl Engine {
    fn tell(&self, event: RunEvent) {
        if let Some(observer) = &self.observer {
            let _ = observer.send(event);
        }
    }

    async fn run(
        &mut self,
        mut source: Source,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        tokio::pin!(shutdown);
        let concurrency = self.config.consumer.concurrency.max(1);
        let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        let metrics = crate::metrics::global();
        loop {
            if grace.is_some() && self.in_flight.is_empty() {
                break;
            }
            metrics.set_in_flight(self.in_flight.len());
            tokio::select! {
                // Finished work first: it frees room for the next message.
                biased;
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    let (seq, finished) = match joined {
                        Ok((id, (seq, result))) => {
                            self.tasks.remove(&id);
                            (seq, match result {
                                Ok(handled) => Finished::Handled(handled),
                                Err(e) => Finished::Failed(format!("not handled: {e}")),
                            })
                        }
                        Err(e) => {
                            let Some(seq) = self.tasks.remove(&e.id()) else { continue };
                            let reason = if e.is_panic() {
                                format!("panic while handling: {}", panic_text(&*e.into_panic()))
                            } else {
                                "handling was cancelled".to_owned()
                            };
                            (seq, Finished::Failed(reason))
                        }
                    };
                    if let Some(in_hand) = self.order.get_mut(&seq) {
                        in_hand.finished = Some(finished);
                    }
                    if let Err(e) = self.acknowledge_ready().await {
                        self.acks.flush().await;
                        source.stop().await;
                        return Err(e);
                    }
                }
                () = &mut shutdown, if grace.is_none() => {
                    tracing::info!(
                        in_hand = self.in_flight.len(),
                        grace = ?self.config.consumer.shutdown_grace,
                        "shutting down: finishing the messages in hand"
                    );
                    grace = Some(Box::pin(tokio::time::sleep(self.config.consumer.shutdown_grace)));
                }
                () = async { if let Some(g) = grace.as_mut() { g.await } }, if grace.is_some() => {
                    self.cut_off().await?;
                    break;
                }
                next = source.next(), if grace.is_none() && self.in_flight.len() < concurrency => {
                    match next {
                        Some(Ok(Received::Message(message))) => self.start(message),
                        Some(Ok(Received::Subscribed)) => self.tell(RunEvent::Subscribed),
                        Some(Err(e)) => {
                            self.acks.flush().await;
                        source.stop().await;
                            return Err(e.into());
                        }
                        None => {
                            self.acks.flush().await;
                        source.stop().await;
                            return Err(SourceError::Ended.into());
                        }
                    }
                }
            }
        }
        metrics.set_in_flight(0);
        self.acks.flush().await;
        source.stop().await;
        Ok(())
    }

    fn start(&mut self, message: Box<Message>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Copies (the payload's is a reference count), so the message itself stays here,
        // free to be acknowledged in its turn.
        let (topic, payload) = (message.topic.clone(), message.payload.clone());
        let transforms = Arc::clone(&self.transforms);
        let handle = self
            .in_flight
            .spawn(async move { (seq, transforms.handle(&topic, &payload).await) });
        self.tasks.insert(handle.id(), seq);
        self.order.insert(
            seq,
            InHand {
                message,
                finished: None,
            },
        );
    }

    /// Acknowledges, in arrival order, every message from the oldest on that is finished.
    async fn acknowledge_ready(&mut self) -> Result<(), RunError> {
        while let Some(entry) = self.order.first_entry() {
            if entry.get().finished.is_none() {
                break;
            }
            let in_hand = entry.remove();
            let Some(finished) = in_hand.finished else {
                continue;
            };
            match finished {
                Finished::Handled(handled) => {
                    let (tenant, outcome) = handled.labels();
                    crate::metrics::global().event(tenant, outcome);
                    self.acks.send(in_hand.message);
                    self.tell(RunEvent::Handled(handled));
                }
                Finished::Failed(reason) => self.park_raw(in_hand.message, reason).await?,
            }
        }
        Ok(())
    }

    /// A message that could not be handled: parked raw with the reason and acknowledged, so the
    /// ones behind it go on. If parking fails too, stop with it unacknowledged.
    async fn park_raw(&mut self, message: Box<Message>, reason: String) -> Result<(), RunError> {
        let parked = ParkedMessage::new(&message.topic, &message.payload, &reason);
        match park_message(&self.config.consumer.dead_letter_dir, &parked).await {
            Ok(path) => {
                crate::metrics::global()
                    .event(tenant_of_topic(&self.config, &message.topic), "parked-raw");
                tracing::error!(
                    topic = %message.topic,
                    parked = %path.display(),
                    "message {reason}; parked raw and acknowledged, going on with the next"
                );
                self.acks.send(message);
                self.tell(RunEvent::Parked {
                    topic: parked.topic,
                    reason,
                });
                Ok(())
            }
            Err(park) => {
                // Not even parking worked (disk full?). Leave the message unacknowledged and
                // stop loudly: the broker keeps it for the next start.
                tracing::error!("message {reason}; {park}; left unacknowledged, stopping");
                Err(RunError::Park {
                    error: reason,
                    park,
                })
            }
        }
    }

    /// The grace period ended with messages still in hand.
    async fn cut_off(&mut self) -> Result<(), RunError> {
        self.in_flight.abort_all();
        if !self.config.broker.clean_session {
            tracing::warn!(
                unfinished = self.order.len(),
                "not finished within shutdownGraceSeconds; left unacknowledged, the broker sends \
                 them again on the next start"
            );
            return Ok(());
        }
        // Without a session the broker would forget them: park each raw, in order.
        for in_hand in self.order.values_mut() {
            if in_hand.finished.is_none() {
                in_hand.finished = Some(Finished::Failed(
                    "not finished within shutdownGraceSeconds before shutdown, and the session \
                     is not persistent"
                        .to_owned(),
                ));
            }
        }
        self.acknowledge_ready().await
    }
}

/// Sends acknowledgements, in the order given, from a task of its own. The engine never waits
/// for one: an acknowledgement waits for the MQTT event loop, which may itself be waiting for
/// the engine to take the next message from the (bounded) source channel — a cycle that would
/// stop both. Acknowledgements queued here are at most the messages in hand, which the
/// broker's window bounds.
struct Acker {
    tx: Option<mpsc::UnboundedSender<Box<Message>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Acker {
    fn start() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Box<Message>>();
        let task = tokio::spawn(async move {
            while let Some(message) = rx.recv().await {
                if let Err(e) = message.ack().await {
                    // The broker will send it again; dedupe recognizes it.
                    tracing::warn!("{e}");
                }
            }
        });
        Self {
            tx: Some(tx),
            task: Some(task),
        }
    }

    fn send(&self, message: Box<Message>) {
        let Some(tx) = &self.tx else { return };
        if tx.send(message).is_err() {
            tracing::warn!("acknowledgement task stopped; the broker will send the message again");
        }
    }

    /// Waits (a bounded time) until every acknowledgement given was handed to the client.
    async fn flush(&mut self) {
        self.tx = None;
        let Some(task) = self.task.take() else { return };
        if tokio::time::timeout(std::time::Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!(
                "acknowledgements not all sent within 5 s; the broker sends those messages again"
            );
        }
    }
}

/// The message of a panic payload (`panic!` gives a `&str` or a `String`).
fn panic_text(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// The metrics label of a raw message: its topic's last level when that is a configured
/// tenant (Butler's and the relay's default topics end with the tenant id), else `unknown`,
/// so an arbitrary publisher cannot mint label values.
fn tenant_of_topic<'a>(config: &'a ConsumerConfig, topic: &str) -> &'a str {
    let last = topic.rsplit('/').next().unwrap_or_default();
    config
        .tenants
        .iter()
        .find(|t| t.id == last)
        .map_or("unknown", |t| t.id.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn test_config(dir: &std::path::Path) -> ConsumerConfig {
        crate::config::for_tests(dir, "", "")
    }

    /// A connection task that ends without an error is a bug the consumer cannot recover
    /// from by itself: it must stop with an error (non-zero exit) for its supervisor.
    #[tokio::test]
    async fn a_source_that_ends_without_an_error_stops_the_run_with_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let consumer = Consumer::build(test_config(dir.path())).expect("builds");
        let (tx, rx) = mpsc::channel(1);
        drop(tx);
        let result = consumer
            .drive(|| Ok(Source::detached(rx)), std::future::pending(), None)
            .await;
        assert!(
            matches!(result, Err(RunError::Source(SourceError::Ended))),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn a_panic_while_handling_is_reported_with_its_message() {
        let mut set = JoinSet::new();
        set.spawn(async {
            tokio::task::yield_now().await;
            let values: Vec<u64> = Vec::new();
            values[usize::from(values.is_empty())]
        });
        let err = set
            .join_next()
            .await
            .expect("a task")
            .expect_err("the panic is caught");
        let text = panic_text(&*err.into_panic());
        assert!(text.contains("index out of bounds"), "{text}");
        assert_eq!(panic_text(&String::from("owned")), "owned");
    }
}
