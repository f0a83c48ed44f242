//! CloudWatch metrics in Lambda, through the Embedded Metric Format (EMF): each request's JSON
//! log line also carries its metric values and an `_aws` block that tells CloudWatch Logs to
//! extract them. No SDK call and no added latency; the log line is written anyway.
//!
//! Metrics (namespace [`NAMESPACE`], dimension `FunctionName`):
//! `relayed` and `publish_latency_ms` for each published event, `rejected` for each refused
//! request (also per `outcome`, e.g. `bad_signature`), `broker_unavailable` for each `503`.

use std::time::Duration;

use serde_json::{Map, Value, json};

use crate::env::var;

pub const NAMESPACE: &str = "QlikCloudRelay";

/// What one request adds to the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure<'a> {
    Relayed {
        publish_latency: Duration,
    },
    /// `outcome` is the rejection's stable label ([`crate::decision::Rejection::outcome`]).
    Rejected {
        outcome: &'a str,
    },
    BrokerUnavailable,
}

/// The `FunctionName` when Lambda did not set `AWS_LAMBDA_FUNCTION_NAME` (emulators).
pub const DEFAULT_FUNCTION_NAME: &str = "relay-fn";

/// Emits EMF members for the request log lines of one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emf {
    function_name: String,
}

impl Emf {
    pub fn new(function_name: impl Into<String>) -> Self {
        Self {
            function_name: function_name.into(),
        }
    }

    /// `AWS_LAMBDA_FUNCTION_NAME` (set by Lambda) becomes the `FunctionName` dimension, which
    /// the template's alarms select.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Self {
        Self::new(
            var(env, "AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| DEFAULT_FUNCTION_NAME.into()),
        )
    }

    /// The members to add to the log line's root: the metric values, the dimension values and
    /// the `_aws` metadata. `timestamp_ms`: milliseconds since the Unix epoch.
    pub fn members(&self, measure: Measure<'_>, timestamp_ms: u64) -> Map<String, Value> {
        let mut root = Map::new();
        root.insert("FunctionName".to_owned(), json!(self.function_name));
        let base = vec!["FunctionName"];
        let (dimensions, metrics) = match measure {
            Measure::Relayed { publish_latency } => {
                let publish_latency_ms =
                    u64::try_from(publish_latency.as_millis()).unwrap_or(u64::MAX);
                root.insert("relayed".to_owned(), json!(1));
                root.insert("publish_latency_ms".to_owned(), json!(publish_latency_ms));
                (
                    vec![base.clone()],
                    json!([
                        {"Name": "relayed", "Unit": "Count"},
                        {"Name": "publish_latency_ms", "Unit": "Milliseconds"},
                    ]),
                )
            }
            Measure::Rejected { outcome } => {
                root.insert("rejected".to_owned(), json!(1));
                root.insert("outcome".to_owned(), json!(outcome));
                let mut by_outcome = base.clone();
                by_outcome.push("outcome");
                (
                    vec![base.clone(), by_outcome],
                    json!([{"Name": "rejected", "Unit": "Count"}]),
                )
            }
            Measure::BrokerUnavailable => {
                root.insert("broker_unavailable".to_owned(), json!(1));
                (
                    vec![base.clone()],
                    json!([{"Name": "broker_unavailable", "Unit": "Count"}]),
                )
            }
        };
        root.insert(
            "_aws".to_owned(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": dimensions,
                    "Metrics": metrics,
                }],
            }),
        );
        root
    }
}

/// Milliseconds since the Unix epoch, for `_aws.Timestamp`.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(emf: &Emf, measure: Measure<'_>) -> Value {
        Value::Object(emf.members(measure, 1_764_486_382_000))
    }

    #[test]
    fn every_measure_is_a_valid_emf_document() {
        for emf in [Emf::new("qlik-relay-relay"), Emf::from_env(&|_| None)] {
            for measure in [
                Measure::Relayed {
                    publish_latency: Duration::from_millis(12),
                },
                Measure::Rejected {
                    outcome: "bad_signature",
                },
                Measure::BrokerUnavailable,
            ] {
                let doc = document(&emf, measure);
                testkit::emf::check(&doc).unwrap_or_else(|e| panic!("{measure:?}: {e}\n{doc}"));
            }
        }
    }

    #[test]
    fn each_measure_has_its_metrics_and_dimensions() {
        let emf = Emf::new("fn");
        let relayed = document(
            &emf,
            Measure::Relayed {
                publish_latency: Duration::from_millis(12),
            },
        );
        assert_eq!(relayed["relayed"], 1);
        assert_eq!(relayed["publish_latency_ms"], 12);
        assert_eq!(relayed["FunctionName"], "fn");
        let directive = &relayed["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(directive["Dimensions"], json!([["FunctionName"]]));
        assert_eq!(relayed["_aws"]["Timestamp"], 1_764_486_382_000u64);

        let rejected = document(&emf, Measure::Rejected { outcome: "x" });
        assert_eq!(rejected["rejected"], 1);
        assert_eq!(rejected["outcome"], "x");
        assert_eq!(
            rejected["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["FunctionName"], ["FunctionName", "outcome"]])
        );

        let down = document(&Emf::from_env(&|_| None), Measure::BrokerUnavailable);
        assert_eq!(down["broker_unavailable"], 1);
        assert_eq!(down["FunctionName"], DEFAULT_FUNCTION_NAME);
        assert!(down.get("relayed").is_none());
    }
}
