//! Prometheus metrics and health, for operators (`Butler.qlikSenseCloud.consumer.metrics.listen`).
//!
//! One process-wide registry ([`global`]), so the pipeline, delivery, the tenant API client and
//! the MQTT source each record with one line and no plumbing. It takes plain values (names,
//! labels, counts) and imports no stage of the pipeline. Served by [`server`] as Prometheus
//! text at `/metrics`; `/healthz` says whether the consumer can do its job.
//!
//! Labels never carry untrusted values: `tenant` is a configured tenant id (events from other
//! tenants count under `unknown`), `sink` a configured sink name.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    tenant: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    sink: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The `kind` values of `qscloud_consumer_store_errors_total`
/// ([`crate::state::redis_store::FailureKind::label`]).
pub const STORE_ERROR_KINDS: [&str; 4] = ["connection", "readonly", "oom", "other"];

/// The series only a shared store (Redis) has: absent with the file store, so a rule or a
/// panel on them has nothing to read on a single consumer (`infra/prometheus/consumer-alerts.yml`
/// and the Grafana dashboard rely on that).
pub const SHARED_STORE_ONLY: [&str; 4] = [
    "qscloud_consumer_store_connected",
    "qscloud_consumer_store_claims_lost_total",
    "qscloud_consumer_store_resets_total",
    "qscloud_consumer_store_errors_total",
];

/// The webhook watchdog's series: only with `watchdog.relayUrl` (consumer or tenant block).
pub const WATCHDOG_ONLY: [&str; 3] = [
    "qscloud_consumer_webhook_enabled",
    "qscloud_consumer_webhook_resends_total",
    "qscloud_consumer_watchdog_checks_total",
];

/// The consumer's metrics. Names are fixed (dashboards and alert rules use them).
pub struct Metrics {
    registry: Registry,
    /// [`SHARED_STORE_ONLY`]'s families, exported once [`Metrics::shared_store_configured`]
    /// was called: a file store has no connection to lose and no group to disagree with, and
    /// a `store_connected 0` there would read as an outage.
    shared_store: Registry,
    shared_store_on: AtomicBool,
    events: Family<EventLabels, Counter>,
    alerts: Family<AlertLabels, Counter>,
    tenant_api: Family<StatusLabels, Counter>,
    latency: Histogram,
    broker_connected: Gauge,
    store_connected: Gauge,
    parked: Gauge,
    claims_lost: Counter,
    store_resets: Counter,
    destination_up: Family<SinkLabels, Gauge>,
    destination_queue: Family<SinkLabels, Gauge>,
    redeliveries: Family<AlertLabels, Counter>,
    throttled: Family<SinkLabels, Counter>,
    digests: Family<SinkLabels, Counter>,
    digest_alerts: Family<SinkLabels, Counter>,
    in_flight: Gauge,
    /// For `/healthz`: the same facts as the gauges, without reading them back.
    broker_up: AtomicBool,
    // Store failures and dedupe evictions (issue 14): made visible, not silent.
    store_errors: Family<KindLabels, Counter>,
    dedupe_evicted: Counter,
    watchdog: WatchdogMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    tenant: String,
    webhook: String,
}

/// The webhook watchdog's metrics (issue 16).
struct WatchdogMetrics {
    enabled: Family<WebhookLabels, Gauge>,
    resends: Family<EventLabels, Counter>,
    checks: Family<EventLabels, Counter>,
}

fn register_watchdog(registry: &mut Registry) -> WatchdogMetrics {
    let m = WatchdogMetrics {
        enabled: Family::default(),
        resends: Family::default(),
        checks: Family::default(),
    };
    registry.register(
        "qscloud_consumer_webhook_enabled",
        "Webhooks to the relay as the watchdog last found them: 1 enabled, 0 disabled by Qlik (and not re-enabled)",
        m.enabled.clone(),
    );
    registry.register(
        "qscloud_consumer_webhook_resends",
        "Failed deliveries the watchdog resent, by tenant and outcome (resent, failed: the tenant refused or did not answer; tried again at the next check)",
        m.resends.clone(),
    );
    registry.register(
        "qscloud_consumer_watchdog_checks",
        "Watchdog checks by tenant and outcome: ok, disabled (a webhook to the relay was disabled), missing (none sends to the relay), error (the tenant API failed)",
        m.checks.clone(),
    );
    m
}

impl Metrics {
    /// A webhook to the relay, enabled or not after the watchdog's check.
    pub fn set_webhook_enabled(&self, tenant: &str, webhook: &str, enabled: bool) {
        self.watchdog
            .enabled
            .get_or_create(&WebhookLabels {
                tenant: tenant.to_owned(),
                webhook: webhook.to_owned(),
            })
            .set(i64::from(enabled));
    }

    pub fn webhook_resend(&self, tenant: &str, outcome: &'static str) {
        self.watchdog
            .resends
            .get_or_create(&EventLabels {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn watchdog_check(&self, tenant: &str, outcome: &'static str) {
        self.watchdog
            .checks
            .get_or_create(&EventLabels {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let events = Family::<EventLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_events",
            "MQTT messages handled, by configured tenant and outcome (alerted, duplicate, ignored, invalid, parked-raw)",
            events.clone(),
        );
        let alerts = Family::<AlertLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_alerts",
            "Alerts per sink (named as in dead-letter files) and outcome (delivered, parked, rate_limited)",
            alerts.clone(),
        );
        let tenant_api = Family::<StatusLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_tenant_api_requests",
            "Qlik tenant REST API requests by HTTP status (or `error` when no answer came)",
            tenant_api.clone(),
        );
        let latency = Histogram::new([
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
        ]);
        registry.register(
            "qscloud_consumer_alert_latency_seconds",
            "Seconds from the event's time to the alert's delivery",
            latency.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "qscloud_consumer_broker_connected",
            "1 while connected to the MQTT broker",
            broker_connected.clone(),
        );
        let mut shared_store = Registry::default();
        let store_connected = Gauge::default();
        shared_store.register(
            "qscloud_consumer_store_connected",
            "1 while the shared state store (Redis) answers; absent with the file store",
            store_connected.clone(),
        );
        let parked = Gauge::default();
        registry.register(
            "qscloud_consumer_parked_alerts",
            "Alerts waiting in the dead-letter directory for `consumer replay`",
            parked.clone(),
        );
        let claims_lost = Counter::default();
        shared_store.register(
            "qscloud_consumer_store_claims_lost",
            "Events alerted whose claim was lost before being marked done (store outage or a lease shorter than the delivery): a second alert is possible",
            claims_lost.clone(),
        );
        let store_resets = Counter::default();
        shared_store.register(
            "qscloud_consumer_store_resets",
            "Times the shared store was found to have forgotten everything (restart without persistence, flush): events handled before may be alerted again",
            store_resets.clone(),
        );
        let destination_up = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "qscloud_consumer_destination_up",
            "1 while a destination takes alerts, 0 while it is marked down (its alerts are parked and redelivered on the schedule)",
            destination_up.clone(),
        );
        let destination_queue = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "qscloud_consumer_destination_queue_depth",
            "Alerts waiting for a destination: in its memory queue plus parked for it",
            destination_queue.clone(),
        );
        let redeliveries = Family::<AlertLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_redeliveries",
            "Automatic redeliveries of parked alerts by sink and outcome (delivered, failed, exhausted: past the schedule, left for `consumer replay`)",
            redeliveries.clone(),
        );
        let throttled = Family::<SinkLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_destination_throttled",
            "Times a destination answered 429/503 with Retry-After and was paused (not failed attempts)",
            throttled.clone(),
        );
        let digests = Family::<SinkLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_digests",
            "Digests made by sink: one per destination and window that had more than `digest.afterAlerts` alerts (a long one is sent in several parts)",
            digests.clone(),
        );
        let digest_alerts = Family::<SinkLabels, Counter>::default();
        registry.register(
            "qscloud_consumer_digest_alerts",
            "Alerts folded into digests by sink, instead of being sent one by one",
            digest_alerts.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "qscloud_consumer_events_in_flight",
            "Events being handled at once (at most `concurrency`)",
            in_flight.clone(),
        );
        let store_errors = register_store_errors(&mut shared_store);
        let dedupe_evicted = register_dedupe(&mut registry);
        let watchdog = register_watchdog(&mut registry);
        Self {
            registry,
            shared_store,
            shared_store_on: AtomicBool::new(false),
            events,
            alerts,
            tenant_api,
            latency,
            broker_connected,
            store_connected,
            parked,
            claims_lost,
            store_resets,
            destination_up,
            destination_queue,
            redeliveries,
            throttled,
            digests,
            digest_alerts,
            in_flight,
            broker_up: AtomicBool::new(false),
            store_errors,
            dedupe_evicted,
            watchdog,
        }
    }

    /// A message handled with this outcome (`parked-raw` for one set aside unparsed).
    pub fn event(&self, tenant: &str, outcome: &'static str) {
        self.events
            .get_or_create(&EventLabels {
                tenant: tenant.to_owned(),
                outcome,
            })
            .inc();
    }

    /// Delivery hook: what became of an alert at one sink (`delivered`, `parked`,
    /// `rate_limited`); a delivery is timed from the event's time (RFC 3339) when known.
    pub fn alert(&self, sink: &str, outcome: &'static str, event_time: Option<&str>) {
        if outcome == "delivered"
            && let Some(seconds) = event_time.and_then(seconds_since)
        {
            self.latency.observe(seconds);
        }
        self.alerts
            .get_or_create(&AlertLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A destination's counters at 0 from its start, so a rule's `increase(…) > 0` sees its
    /// first alert parked, redelivery exhausted or pause, and a rule or panel on them has a
    /// series to read on a consumer where nothing went wrong yet.
    pub fn init_destination(&self, sink: &str) {
        let labels = SinkLabels {
            sink: sink.to_owned(),
        };
        for outcome in ["delivered", "parked", "rate_limited", "digested"] {
            drop(self.alerts.get_or_create(&AlertLabels {
                sink: sink.to_owned(),
                outcome,
            }));
        }
        for outcome in ["delivered", "failed", "exhausted"] {
            drop(self.redeliveries.get_or_create(&AlertLabels {
                sink: sink.to_owned(),
                outcome,
            }));
        }
        drop(self.throttled.get_or_create(&labels));
        drop(self.digests.get_or_create(&labels));
        drop(self.digest_alerts.get_or_create(&labels));
    }

    /// A destination marked up or down (circuit breaker).
    pub fn set_destination_up(&self, sink: &str, up: bool) {
        self.destination_up
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(i64::from(up));
    }

    pub fn set_destination_queue(&self, sink: &str, depth: usize) {
        self.destination_queue
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    /// An automatic redelivery: `delivered`, `failed` or `exhausted`.
    pub fn redelivery(&self, sink: &str, outcome: &'static str) {
        self.redeliveries
            .get_or_create(&AlertLabels {
                sink: sink.to_owned(),
                outcome,
            })
            .inc();
    }

    /// A digest made for `sink`, listing `alerts` folded alerts.
    pub fn digest(&self, sink: &str, alerts: usize) {
        let labels = SinkLabels {
            sink: sink.to_owned(),
        };
        self.digests.get_or_create(&labels).inc();
        self.digest_alerts
            .get_or_create(&labels)
            .inc_by(u64::try_from(alerts).unwrap_or(u64::MAX));
    }

    pub fn throttled(&self, sink: &str) {
        self.throttled
            .get_or_create(&SinkLabels {
                sink: sink.to_owned(),
            })
            .inc();
    }

    pub fn set_in_flight(&self, events: usize) {
        self.in_flight
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// Tenant API hook: the HTTP status of an answer, or `None` when none came.
    pub fn tenant_api(&self, status: Option<u16>) {
        let status = status.map_or_else(|| "error".to_owned(), |s| s.to_string());
        self.tenant_api
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    /// Source hook: connected to the broker or not.
    pub fn set_broker_connected(&self, up: bool) {
        self.broker_up.store(up, Ordering::Relaxed);
        self.broker_connected.set(i64::from(up));
    }

    pub fn broker_connected(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }

    pub fn set_store_connected(&self, up: bool) {
        self.store_connected.set(i64::from(up));
    }

    pub fn set_parked(&self, count: usize) {
        self.parked.set(i64::try_from(count).unwrap_or(i64::MAX));
    }

    pub fn claim_lost(&self) {
        self.claims_lost.inc();
    }

    pub fn store_reset(&self) {
        self.store_resets.inc();
    }

    pub fn claims_lost_count(&self) -> u64 {
        self.claims_lost.get()
    }

    /// A shared store (Redis) is configured: its series ([`SHARED_STORE_ONLY`]) are exported
    /// from now on.
    pub fn shared_store_configured(&self) {
        self.shared_store_on.store(true, Ordering::Relaxed);
    }

    /// The Prometheus text exposition (OpenMetrics flavour, which Prometheus reads).
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode_registry(&mut out, &self.registry);
        if self.shared_store_on.load(Ordering::Relaxed) {
            let _ = encode_registry(&mut out, &self.shared_store);
        }
        let _ = encode_eof(&mut out);
        out
    }
}

fn register_store_errors(registry: &mut Registry) -> Family<KindLabels, Counter> {
    let store_errors = Family::<KindLabels, Counter>::default();
    // Every kind shown from the start, at 0: a rule or panel on one kind has a series to read.
    for kind in STORE_ERROR_KINDS {
        drop(store_errors.get_or_create(&KindLabels { kind }));
    }
    registry.register(
        "qscloud_consumer_store_errors",
        "Failed tries of shared-store (Redis) operations by kind: connection (no answer), readonly (a replica after a failover), oom (maxmemory reached), other (refused: server too old, ACL, ...)",
        store_errors.clone(),
    );
    store_errors
}

fn register_dedupe(registry: &mut Registry) -> Counter {
    let dedupe_evicted = Counter::default();
    registry.register(
        "qscloud_consumer_dedupe_evicted",
        "Event ids the file store's full dedupe memory forgot before their retention ended: a redelivery of one would alert again",
        dedupe_evicted.clone(),
    );
    dedupe_evicted
}

impl Metrics {
    /// A shared-store operation failed once (it is retried); `kind` is one of
    /// [`STORE_ERROR_KINDS`].
    pub fn store_error(&self, kind: &'static str) {
        self.store_errors.get_or_create(&KindLabels { kind }).inc();
    }

    pub fn store_errors_count(&self, kind: &'static str) -> u64 {
        self.store_errors.get_or_create(&KindLabels { kind }).get()
    }

    /// The dedupe memory was full and forgot `count` ids still within their retention.
    pub fn dedupe_evicted(&self, count: u64) {
        self.dedupe_evicted.inc_by(count);
    }

    pub fn dedupe_evicted_count(&self) -> u64 {
        self.dedupe_evicted.get()
    }
}

/// Seconds from an RFC 3339 time to now; `None` when it does not parse. A clock skew that puts
/// the event in the future counts as zero.
fn seconds_since(rfc3339: &str) -> Option<f64> {
    let at = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    Some((OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_measured_from_the_event_time() {
        let earlier = (OffsetDateTime::now_utc() - time::Duration::seconds(90))
            .format(&Rfc3339)
            .unwrap();
        let seconds = seconds_since(&earlier).unwrap();
        assert!((89.0..120.0).contains(&seconds), "{seconds}");
        assert_eq!(seconds_since("2999-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(seconds_since("yesterday"), None);
    }

    #[test]
    fn names_are_the_documented_ones() {
        let m = Metrics::new();
        m.event("t1", "alerted");
        m.tenant_api(Some(200));
        m.tenant_api(None);
        m.set_broker_connected(true);
        m.set_parked(3);
        let text = m.encode();
        for line in [
            "qscloud_consumer_events_total{tenant=\"t1\",outcome=\"alerted\"} 1",
            "qscloud_consumer_tenant_api_requests_total{status=\"200\"} 1",
            "qscloud_consumer_tenant_api_requests_total{status=\"error\"} 1",
            "qscloud_consumer_broker_connected 1",
            "qscloud_consumer_parked_alerts 3",
            "# TYPE qscloud_consumer_alert_latency_seconds histogram",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn store_error_and_dedupe_eviction_names_are_the_documented_ones() {
        let m = Metrics::new();
        m.shared_store_configured();
        m.store_error("oom");
        m.dedupe_evicted(3);
        let text = m.encode();
        for line in [
            "qscloud_consumer_store_errors_total{kind=\"oom\"} 1",
            "qscloud_consumer_store_errors_total{kind=\"readonly\"} 0",
            "qscloud_consumer_store_errors_total{kind=\"connection\"} 0",
            "qscloud_consumer_store_errors_total{kind=\"other\"} 0",
            "qscloud_consumer_dedupe_evicted_total 3",
        ] {
            assert!(text.contains(line), "missing `{line}` in:\n{text}");
        }
    }

    #[test]
    fn store_series_only_with_a_shared_store() {
        let m = Metrics::new();
        m.set_store_connected(false);
        m.store_error("connection");
        m.claim_lost();
        let file_store = m.encode();
        assert!(
            !file_store.contains("qscloud_consumer_store_"),
            "{file_store}"
        );
        assert!(file_store.contains("qscloud_consumer_dedupe_evicted_total 0"));
        assert!(file_store.ends_with("# EOF\n"), "{file_store}");
        m.shared_store_configured();
        let shared = m.encode();
        for name in SHARED_STORE_ONLY {
            assert!(
                shared.contains(&format!("\n{name}")),
                "{name} missing:\n{shared}"
            );
        }
        assert!(
            shared.contains("qscloud_consumer_store_connected 0"),
            "{shared}"
        );
        assert_eq!(shared.matches("# EOF").count(), 1, "{shared}");
        assert!(shared.ends_with("# EOF\n"));
    }

    #[test]
    fn the_grafana_dashboard_uses_only_metrics_that_exist() {
        let dashboard = include_str!("../../../infra/grafana/consumer-dashboard.json");
        let m = Metrics::new();
        // A family shows in the exposition once it has a series.
        m.set_destination_up("s", true);
        m.set_destination_queue("s", 0);
        m.redelivery("s", "exhausted");
        m.throttled("s");
        m.digest("s", 5);
        m.set_webhook_enabled("t", "w", true);
        m.webhook_resend("t", "resent");
        m.watchdog_check("t", "ok");
        m.event("t", "alerted");
        m.tenant_api(Some(200));
        m.alerts
            .get_or_create(&AlertLabels {
                sink: "s".into(),
                outcome: "delivered",
            })
            .inc();
        m.shared_store_configured();
        let exposed = m.encode();
        let mut checked = 0;
        for (at, _) in dashboard.match_indices("qscloud_consumer_") {
            let name: String = dashboard[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposed.contains(&name),
                "dashboard uses unknown metric {name}"
            );
            checked += 1;
        }
        assert!(checked > 10);
    }
}
