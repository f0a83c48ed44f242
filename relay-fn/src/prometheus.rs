//! Prometheus metrics in HTTP mode, served as text at `/metrics` ([`crate::http_server`]).
//! Lambda reports the same facts to CloudWatch through EMF ([`crate::metrics`]).
//!
//! Names are fixed (dashboards and alert rules use them); labels carry only the relay's own
//! fixed values, never anything taken from a request.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::decision::Rejection;
use crate::metrics::Measure;

/// The content type of [`Exposition::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

/// One relay's metrics (a registry per relay, so tests can run several in one process).
pub struct Exposition {
    registry: Registry,
    relayed: Counter,
    rejected: Family<ReasonLabels, Counter>,
    broker_unavailable: Counter,
    broker_connected: Gauge,
    publish_latency: Histogram,
}

impl Default for Exposition {
    fn default() -> Self {
        Self::new()
    }
}

impl Exposition {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let relayed = Counter::default();
        registry.register(
            "qscloud_relay_events_relayed",
            "Events published and acknowledged by the broker (answered 200)",
            relayed.clone(),
        );
        let rejected = Family::<ReasonLabels, Counter>::default();
        // Every reason from the start: a series that appears with its first count is invisible
        // to increase() and rate().
        for reason in Rejection::OUTCOMES {
            let _ = rejected.get_or_create(&ReasonLabels { reason });
        }
        registry.register(
            "qscloud_relay_requests_rejected",
            "Requests refused with a 4xx and not published, by reason",
            rejected.clone(),
        );
        let broker_unavailable = Counter::default();
        registry.register(
            "qscloud_relay_broker_unavailable",
            "Accepted events the broker did not acknowledge in time (answered 503; Qlik can resend them)",
            broker_unavailable.clone(),
        );
        let broker_connected = Gauge::default();
        registry.register(
            "qscloud_relay_broker_connected",
            "1 while the relay's MQTT connection is up (the broker accepted it), else 0",
            broker_connected.clone(),
        );
        let publish_latency = Histogram::new([
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]);
        registry.register(
            "qscloud_relay_publish_latency_seconds",
            "Seconds from handing a relayed event to the broker to its PUBACK (retry included)",
            publish_latency.clone(),
        );
        Self {
            registry,
            relayed,
            rejected,
            broker_unavailable,
            broker_connected,
            publish_latency,
        }
    }

    /// Counts one request.
    pub fn record(&self, measure: Measure<'_>) {
        match measure {
            Measure::Relayed { publish_latency } => {
                self.relayed.inc();
                self.publish_latency.observe(publish_latency.as_secs_f64());
            }
            Measure::Rejected { outcome } => {
                // Outcomes are the fixed labels of Rejection::outcome; an unknown one would be
                // a bug, not request data, and still counts.
                let reason = Rejection::OUTCOMES
                    .into_iter()
                    .find(|known| *known == outcome)
                    .unwrap_or("other");
                self.rejected.get_or_create(&ReasonLabels { reason }).inc();
            }
            Measure::BrokerUnavailable => {
                self.broker_unavailable.inc();
            }
        }
    }

    /// The Prometheus text, with the broker gauge as `connected` says it is now.
    pub fn encode(&self, connected: bool) -> String {
        self.broker_connected.set(i64::from(connected));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn line<'a>(text: &'a str, name: &str) -> Option<&'a str> {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
    }

    #[test]
    fn every_reason_is_exposed_from_the_start_and_counts() {
        let m = Exposition::new();
        let text = m.encode(false);
        for reason in Rejection::OUTCOMES {
            let name = format!("qscloud_relay_requests_rejected_total{{reason=\"{reason}\"}}");
            assert_eq!(
                line(&text, &name),
                Some(format!("{name} 0").as_str()),
                "{text}"
            );
        }
        assert_eq!(
            line(&text, "qscloud_relay_broker_connected"),
            Some("qscloud_relay_broker_connected 0")
        );
        m.record(Measure::Rejected {
            outcome: "bad_signature",
        });
        m.record(Measure::Relayed {
            publish_latency: Duration::from_millis(3),
        });
        m.record(Measure::BrokerUnavailable);
        let text = m.encode(true);
        for expected in [
            "qscloud_relay_requests_rejected_total{reason=\"bad_signature\"} 1",
            "qscloud_relay_requests_rejected_total{reason=\"not_an_event\"} 0",
            "qscloud_relay_events_relayed_total 1",
            "qscloud_relay_broker_unavailable_total 1",
            "qscloud_relay_broker_connected 1",
            "qscloud_relay_publish_latency_seconds_count 1",
            "qscloud_relay_publish_latency_seconds_bucket{le=\"0.005\"} 1",
            "qscloud_relay_publish_latency_seconds_bucket{le=\"0.0025\"} 0",
        ] {
            assert!(text.lines().any(|l| l == expected), "{expected}\n{text}");
        }
    }

    #[test]
    fn an_unknown_outcome_counts_as_other() {
        let m = Exposition::new();
        m.record(Measure::Rejected { outcome: "new" });
        assert!(
            m.encode(true)
                .contains("qscloud_relay_requests_rejected_total{reason=\"other\"} 1")
        );
    }
}
