//! Issue 9: whatever a client allowed to publish under the subscription sends, parsing the
//! envelope and building the alert context never panic. Every field of the three Qlik sample
//! envelopes (and of the tenant API's reload answer) gets arbitrary JSON, with a bias towards
//! the values that have broken things: huge and negative numbers, valid timestamps at the ends
//! of the calendar, empty and non-ASCII text.

use consumer::config::{AuthType, SecretSource, TenantAlerts, TenantConfig};
use consumer::enrich::{Enrichment, build_context};
use consumer::tenant_api::ReloadInfo;
use consumer::transforms::parse;
use consumer::transforms::reload::{Reaction, react};
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Map, Value, json};

const SAMPLES: [&str; 3] = [
    include_str!("../../testdata/qlik-samples/app-reload-failed.cloudevents.json"),
    include_str!("../../testdata/qlik-samples/reload-finished-failed.cloudevents.json"),
    include_str!("../../testdata/qlik-samples/app-reload-failed.legacy.json"),
];

const TEXTS: &[&str] = &[
    "",
    "2026-11-30T07:06:12Z",
    "9999-12-31T23:59:59Z",
    "0000-01-01T00:00:00Z",
    "-9999-01-01T00:00:00Z",
    "2026-11-30T07:06:12.999999999+23:59",
    "error",
    "FAILED",
    "EXCEEDED_LIMIT",
    "com.qlik.v1.reload.finished",
    "com.qlik.v1.app.reload.finished",
    "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ",
    "ä🦀\u{202e}\r\n",
    "{{appName}}",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(TEXTS).prop_map(str::to_owned),
        ".{0,40}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        proptest::num::f64::NORMAL.prop_map(|f| json!(f)),
        proptest::sample::select(&[1e300, -1e300, 9.3e15, 1.8e19, 0.0, -0.0, 1e-300][..])
            .prop_map(|f| json!(f)),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every (possibly nested) key path of a JSON object.
fn paths(value: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    if let Value::Object(map) = value {
        for (key, child) in map {
            prefix.push(key.clone());
            out.push(prefix.clone());
            paths(child, prefix, out);
            prefix.pop();
        }
    }
}

fn replace(value: &mut Value, path: &[String], new: Value) {
    let mut node = value;
    for key in &path[..path.len() - 1] {
        match node.get_mut(key) {
            Some(next) => node = next,
            None => return,
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(path[path.len() - 1].clone(), new);
    }
}

/// A sample with some of its fields (chosen by the bits of `mask`) replaced.
fn mutated(sample: usize, mask: u64, values: &[Value]) -> Vec<u8> {
    let mut v: Value = serde_json::from_str(SAMPLES[sample]).expect("sample is JSON");
    let mut all = Vec::new();
    paths(&v, &mut Vec::new(), &mut all);
    for (i, path) in all.iter().enumerate() {
        if mask & (1 << (i % 64)) != 0 {
            replace(&mut v, path, values[i % values.len()].clone());
        }
    }
    serde_json::to_vec(&v).expect("serializes")
}

fn tenant() -> TenantConfig {
    TenantConfig {
        id: "Xq7vR2mK9pLs4TnB8wYc1ZdE5fGh3JkQ".to_owned(),
        configured_id: None,
        tenant_url: url::Url::parse("https://acme.eu.qlikcloud.com").expect("url"),
        auth_type: AuthType::Jwt,
        jwt: SecretString::from("a.b.c"),
        jwt_source: SecretSource::None,
        qmc_url: None,
        hub_url: None,
        comment: None,
        alert: TenantAlerts::default(),
        watchdog_relay_url: None,
        key_path: "Butler.qlikSenseCloud.event.mqtt.tenant".to_owned(),
    }
}

fn context_of(body: &[u8], enrichment: &Enrichment) {
    let Ok(envelope) = parse::parse(body) else {
        return;
    };
    let _ = envelope.app_id();
    if let Reaction::Alert(reload) | Reaction::ReloadOk(reload) = react(&envelope) {
        for (head, tail) in [(10, 10), (0, 0), (usize::MAX, usize::MAX)] {
            let ctx = build_context(&envelope, &reload, &tenant(), enrichment, head, tail);
            let _ = ctx.for_json_template().to_json();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_field_of_a_sample_envelope_never_panics(
        sample in 0..SAMPLES.len(),
        mask in any::<u64>(),
        values in proptest::collection::vec(json_value(), 1..8),
        start in proptest::option::of(text()),
        end in proptest::option::of(text()),
        log in proptest::option::of(".{0,200}"),
    ) {
        let body = mutated(sample, mask, &values);
        let enrichment = Enrichment {
            reload: Some(ReloadInfo {
                start_time: start,
                end_time: end,
                ..ReloadInfo::default()
            }),
            script_log: log.map(std::sync::Arc::from),
            ..Enrichment::default()
        };
        context_of(&body, &Enrichment::default());
        context_of(&body, &enrichment);
    }

    /// The fields arithmetic is done on: times and durations, in every reload sample.
    #[test]
    fn any_time_and_duration_never_panics(
        sample in 0..SAMPLES.len(),
        start in text(),
        end in text(),
        duration in number(),
        seconds in number(),
    ) {
        let mut v: Value = serde_json::from_str(SAMPLES[sample]).expect("sample is JSON");
        if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
            data.insert("startTime".into(), Value::String(start));
            data.insert("endTime".into(), Value::String(end));
            data.insert("duration".into(), duration);
            data.insert("durationSeconds".into(), seconds);
        }
        context_of(&serde_json::to_vec(&v).expect("serializes"), &Enrichment::default());
    }

    #[test]
    fn any_json_at_all_never_panics(value in json_value(), bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let body = serde_json::to_vec(&value).expect("serializes");
        context_of(&body, &Enrichment::default());
        context_of(&bytes, &Enrichment::default());
    }
}

/// The poison message, kept as a fixed case: the property above finds it only by luck.
#[test]
fn the_reported_poison_message_builds_a_context() {
    let body = SAMPLES[1].replace("\"durationSeconds\":13", "\"durationSeconds\":1e300");
    context_of(body.as_bytes(), &Enrichment::default());
}
