//! Properties that must hold for any input a client can send: a signature made with the secret
//! always verifies, any one-byte change to body or signature never does, and the envelope
//! parser, Butler's legacy fields and the topic builder never panic, whatever the JSON holds.

use proptest::prelude::*;
use qlik_events::{
    Envelope, TopicRouting, TopicTemplate, WebhookSecrets, sign, with_legacy_fields,
};
use serde_json::{Map, Value};

const SECRET: &str = "relay-test-secret-do-not-use-in-production-0001";

/// Any JSON value, nested a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String("\u{FFFE}$#+/\0".into())),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The keys an envelope parser looks at, in all three formats, each given an arbitrary value.
const ENVELOPE_KEYS: &[&str] = &[
    "specversion",
    "id",
    "time",
    "type",
    "source",
    "tenantid",
    "userid",
    "ownerid",
    "spaceid",
    "toplevelresourceid",
    "datacontenttype",
    "cloudEventsVersion",
    "eventId",
    "eventTime",
    "eventType",
    "eventTypeVersion",
    "contentType",
    "extensions",
    "data",
];

/// A valid envelope of each format with a few of its fields replaced by arbitrary values, so
/// that most cases get past the parser's first checks and exercise what comes after.
fn envelope_like() -> impl Strategy<Value = Map<String, Value>> {
    let base = prop_oneof![
        Just(include_str!(
            "../../testdata/qlik-samples/app-reload-failed.cloudevents.json"
        )),
        Just(include_str!(
            "../../testdata/qlik-samples/app-reload-failed.legacy.json"
        )),
        Just(include_str!(
            "../../testdata/qlik-samples/reload-finished-failed.cloudevents.json"
        )),
    ];
    let overrides =
        prop::collection::vec((prop::sample::select(ENVELOPE_KEYS), json_value()), 0..4);
    (base, overrides).prop_map(|(base, overrides)| {
        let Ok(Value::Object(mut obj)) = serde_json::from_str::<Value>(base) else {
            unreachable!("the samples are JSON objects")
        };
        for (key, value) in overrides {
            obj.insert(key.to_owned(), value);
        }
        obj
    })
}

/// A well-formed CloudEvents body whose identifying strings are arbitrary.
fn cloudevent(tenant: String, event_type: String, app: String, status: String) -> Vec<u8> {
    serde_json::json!({
        "specversion": "1.0", "id": "e1", "type": event_type, "tenantid": tenant,
        "toplevelresourceid": app, "data": {"status": status, "appId": app}
    })
    .to_string()
    .into_bytes()
}

fn topic_is_publishable(topic: &str) {
    assert!(!topic.contains(['+', '#', '\0']), "{topic:?}");
    assert!(!topic.chars().any(char::is_control), "{topic:?}");
    assert!(
        !topic
            .chars()
            .any(|c| (0xFDD0..=0xFDEF).contains(&u32::from(c)) || u32::from(c) & 0xFFFE == 0xFFFE),
        "{topic:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn a_signed_body_verifies(body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let secrets = WebhookSecrets::from_list(SECRET).unwrap();
        let signature = sign(SECRET, &body);
        prop_assert!(secrets.verify(Some(signature.as_bytes()), body.clone()).is_ok());
        // Qlik documents hex; upper case must verify too.
        let upper = signature.to_ascii_uppercase();
        prop_assert!(secrets.verify(Some(upper.as_bytes()), body).is_ok());
    }

    #[test]
    fn any_one_byte_change_to_the_body_fails(
        body in prop::collection::vec(any::<u8>(), 1..2048),
        index in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let secrets = WebhookSecrets::from_list(SECRET).unwrap();
        let signature = sign(SECRET, &body);
        let mut tampered = body;
        let at = index.index(tampered.len());
        tampered[at] ^= flip;
        prop_assert!(secrets.verify(Some(signature.as_bytes()), tampered).is_err());
    }

    #[test]
    fn any_one_byte_change_to_the_signature_fails(
        body in prop::collection::vec(any::<u8>(), 0..512),
        index in any::<prop::sample::Index>(),
        replacement in any::<u8>(),
    ) {
        let secrets = WebhookSecrets::from_list(SECRET).unwrap();
        let signature = sign(SECRET, &body).into_bytes();
        let at = index.index(signature.len());
        // A change of case is the same hex digit, so it is not a change of the signature.
        prop_assume!(!replacement.eq_ignore_ascii_case(&signature[at]));
        let mut tampered = signature;
        tampered[at] = replacement;
        prop_assert!(secrets.verify(Some(&tampered), body).is_err());
    }

    #[test]
    fn the_parser_never_panics_on_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Envelope::parse(&body);
    }

    #[test]
    fn the_parser_and_router_never_panic_on_any_json(obj in envelope_like()) {
        let body = serde_json::to_vec(&Value::Object(obj)).unwrap();
        if let Ok(envelope) = Envelope::parse(&body) {
            let _ = (envelope.app_id(), envelope.status(), envelope.is_app_reload());
            let _ = envelope.timestamp();
            let _ = envelope.reload();
            topic_is_publishable(&TopicRouting::default().topic_for(&envelope));
            let template: TopicTemplate = "{tenantId}/{type}/{appId}/{status}".parse().unwrap();
            let topic = TopicRouting::Template(template).topic_for(&envelope);
            topic_is_publishable(&topic);
            prop_assert!(!topic.starts_with('$'));
            if let Ok(out) = with_legacy_fields(&body, &envelope) {
                let again = Envelope::parse(&out);
                prop_assert!(again.is_ok(), "Butler mode made an unparsable body");
                prop_assert_eq!(again.unwrap().id, envelope.id);
            }
        }
    }

    #[test]
    fn topics_from_arbitrary_strings_are_publishable(
        tenant in ".{0,300}",
        event_type in ".{0,80}",
        app in ".{0,80}",
        status in ".{0,20}",
    ) {
        let body = cloudevent(tenant, event_type, app, status);
        let Ok(envelope) = Envelope::parse(&body) else { return Ok(()) };
        let default = TopicRouting::default().topic_for(&envelope);
        topic_is_publishable(&default);
        prop_assert!(default.starts_with("qscloud/"));
        // The tenant and the type are one level each: no injected separator.
        prop_assert!(default.split('/').count() <= 5, "{default:?}");
        let template: TopicTemplate = "{tenantId}/{appId}/{status}".parse().unwrap();
        let topic = TopicRouting::Template(template).topic_for(&envelope);
        topic_is_publishable(&topic);
        prop_assert!(!topic.starts_with('$'));
        prop_assert_eq!(topic.split('/').count(), 3);
    }
}
