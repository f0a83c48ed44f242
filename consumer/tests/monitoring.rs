//! What an operator's monitoring sees of a healthy single consumer with the file store: no
//! shared-store series, alert rules (`infra/prometheus/consumer-alerts.yml`) and a Grafana
//! dashboard (`infra/grafana/consumer-dashboard.json`) that use only series this consumer
//! exports (or documented shared-store-only ones), none of the rules firing and no stat panel
//! red on its series (with promtool, when it is installed or in `target/tools/`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use consumer::metrics::{SHARED_STORE_ONLY, WATCHDOG_ONLY};
use serde_json::{Value, json};
use support::*;

fn repo_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `qscloud_…` metric name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("qscloud_")
        .map(|(at, _)| {
            text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        // `qscloud_consumer_store_*` in a comment is a family of names, not one.
        .filter(|name| !name.ends_with('_'))
        .collect()
}

/// The names a scrape exports: every sample's, and every family it declares (`# TYPE`) under
/// the names queries use (`_total` for a counter, `_bucket`/`_sum`/`_count` for a histogram),
/// also when the family has no series yet (a destination that has had no alert).
fn exported(scrape: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in scrape.lines() {
        if let Some(declared) = line.strip_prefix("# TYPE ") {
            let mut parts = declared.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            match kind {
                "counter" => {
                    names.insert(format!("{name}_total"));
                }
                "histogram" => {
                    for suffix in ["_bucket", "_sum", "_count"] {
                        names.insert(format!("{name}{suffix}"));
                    }
                }
                _ => {
                    names.insert(name.to_owned());
                }
            }
        } else if !line.starts_with('#') {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
        }
    }
    names
}

/// The scrape's samples as promtool input series, constant for `minutes` (counters that do not
/// move: nothing happens but the consumer being up), labelled as Prometheus would scrape them.
fn input_series(scrape: &str, minutes: u32) -> Vec<Value> {
    const TARGET: &str = "job=\"qscloud-consumer\",instance=\"consumer:9464\"";
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let value: f64 = value.parse().ok().filter(|v: &f64| v.is_finite())?;
            let series = match series.split_once('{') {
                Some((name, labels)) => format!("{name}{{{TARGET},{labels}"),
                None => format!("{series}{{{TARGET}}}"),
            };
            Some(json!({"series": series, "values": format!("{value}x{minutes}")}))
        })
        .collect()
}

/// The alert names of the rules file.
fn alert_names(rules: &str) -> Vec<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(|n| n.trim().to_owned())
        .collect()
}

/// For each stat panel of the dashboard, a query that has a result exactly when the panel
/// shows red: the ranges of its red threshold steps.
fn red_conditions(dashboard: &Value) -> Vec<(String, String)> {
    let mut conditions = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        if panel["type"] != "stat" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        let steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a query");
            for (i, step) in steps.iter().enumerate() {
                if step["color"] != "red" {
                    continue;
                }
                let mut parts = Vec::new();
                if let Some(from) = step["value"].as_f64() {
                    parts.push(format!("({expr}) >= {from}"));
                }
                if let Some(to) = steps.get(i + 1).and_then(|s| s["value"].as_f64()) {
                    parts.push(format!("({expr}) < {to}"));
                }
                if parts.is_empty() {
                    parts.push(expr.to_owned());
                }
                conditions.push((title.clone(), parts.join(" and ")));
            }
        }
    }
    conditions
}

fn promtool() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("promtool"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| Some(repo_file("target/tools/promtool")).filter(|p| p.is_file()))
}

#[tokio::test]
async fn a_single_consumer_exports_no_store_series_and_its_monitoring_stays_quiet() {
    let broker = testkit::embedded();
    let mut webhook = Receiver::start().await;
    // Enriched through a tenant API, as in production: its answers are counted too.
    let tenant = fake_tenant::FakeTenant::start().await;
    let mut setup = write_config(
        &broker,
        &Destinations::one_webhook(webhook.url("hook")).through(&tenant),
    );
    let port = free_port();
    setup.edit(|config| {
        config.consumer("metrics.listen", format!("127.0.0.1:{port}"));
    });
    let consumer = spawn_binary(&setup).await;
    // One failed reload alerted, so the destinations' series exist as on any working day.
    let id = testkit::unique("monitoring");
    publish(
        &broker,
        &setup.topic,
        event(Sample::CloudEventsAppReload, &id, TENANT, "app-m"),
    )
    .await;
    webhook.delivered().await;
    let delivered = "qscloud_consumer_alerts_total{sink=\"webhook:ops\",outcome=\"delivered\"}";
    wait_for_metric(port, delivered, |v| v >= 1.0).await;
    let scrape = metrics(port).await;
    consumer.kill().await;

    // The file store has no connection to lose: no store series at all.
    assert!(
        !scrape.contains("qscloud_consumer_store_"),
        "store series with the file store:\n{scrape}"
    );
    assert!(
        scrape.contains("qscloud_consumer_broker_connected 1"),
        "{scrape}"
    );

    // Every name the rules and the dashboard use is exported here, or is one only a shared
    // store or the webhook watchdog has (documented as such), or a relay series documented in
    // docs/relay.md.
    let exported = exported(&scrape);
    let rules = read("infra/prometheus/consumer-alerts.yml");
    let dashboard_text = read("infra/grafana/consumer-dashboard.json");
    let operations = read("docs/operations.md");
    let relay = read("docs/relay.md");
    let row = |name: &str| {
        operations
            .lines()
            .find(|l| l.starts_with(&format!("| `{name}")))
            .unwrap_or_else(|| panic!("docs/operations.md has no row for {name}"))
    };
    for name in SHARED_STORE_ONLY {
        assert!(row(name).contains("Redis store only"), "{}", row(name));
    }
    for name in WATCHDOG_ONLY {
        assert!(row(name).contains("[watchdog]"), "{}", row(name));
    }
    let mut checked = 0;
    for (file, text) in [
        ("consumer-alerts.yml", &rules),
        ("consumer-dashboard.json", &dashboard_text),
    ] {
        for name in metric_names(text) {
            let known = exported.contains(&name)
                || SHARED_STORE_ONLY.contains(&name.as_str())
                || WATCHDOG_ONLY.contains(&name.as_str())
                || name.starts_with("qscloud_relay_") && relay.contains(&name);
            assert!(
                known,
                "{file} uses {name}, which a single consumer does not export and which is not \
                 a documented shared-store-only or relay series"
            );
            checked += 1;
        }
    }
    assert!(checked > 25, "{checked}");

    // The promtool unit tests cover every rule with a healthy single consumer.
    let alerts = alert_names(&rules);
    assert!(alerts.len() >= 20, "{alerts:?}");
    let unit_tests = read("infra/prometheus/consumer-alerts.test.yml");
    let healthy = unit_tests
        .split("  - name: ")
        .find(|t| t.starts_with("a healthy single consumer"))
        .expect("the healthy single consumer test");
    for alert in &alerts {
        assert!(
            healthy.contains(&format!("alertname: {alert}, exp_alerts: [] }}")),
            "consumer-alerts.test.yml: the healthy single consumer does not check {alert}"
        );
    }

    // The same with this run's own series: nothing fires, no stat panel is red.
    let Some(promtool) = promtool() else {
        eprintln!(
            "SKIPPED the promtool part: no promtool on PATH or in target/tools \
             (scripts/check-alert-rules.sh --install puts it there)"
        );
        return;
    };
    let dashboard: Value = serde_json::from_str(&dashboard_text).expect("dashboard JSON");
    let red = red_conditions(&dashboard);
    assert!(red.len() >= 4, "{red:?}");
    let dir = tempfile::tempdir().expect("temp dir");
    let test = json!({
        "rule_files": [repo_file("infra/prometheus/consumer-alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{
            "name": "this run's series for 25 hours",
            "interval": "1m",
            "input_series": input_series(&scrape, 1500),
            "alert_rule_test": alerts.iter().map(|a| json!({
                "eval_time": "25h", "alertname": a, "exp_alerts": []
            })).collect::<Vec<_>>(),
            "promql_expr_test": red.iter().map(|(_, expr)| json!({
                "expr": expr, "eval_time": "25h", "exp_samples": []
            })).collect::<Vec<_>>(),
        }],
    });
    // JSON is YAML.
    let file = dir.path().join("single-consumer.test.yml");
    std::fs::write(&file, test.to_string()).expect("write test file");
    let output = std::process::Command::new(&promtool)
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool runs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "with a single consumer's series something fires or a stat panel is red \
         (panels checked: {:?}):\n{report}",
        red.iter().map(|(t, _)| t).collect::<Vec<_>>()
    );
}
