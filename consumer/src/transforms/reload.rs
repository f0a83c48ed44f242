//! React: decide what an event means for alerting. Failed reloads of either event type become
//! alerts; everything else is only logged.

use qlik_events::{Envelope, ReloadEvent};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reaction {
    /// `com.qlik.v1.app.reload.finished` with status `error`, or `com.qlik.v1.reload.finished`
    /// with status FAILED / EXCEEDED_LIMIT.
    Alert(ReloadEvent),
    /// A reload that did not fail (ok, SUCCEEDED, CANCELED).
    ReloadOk(ReloadEvent),
    /// Any other event type.
    Other,
}

pub fn react(envelope: &Envelope) -> Reaction {
    match envelope.reload() {
        Some(reload) if reload.failed => Reaction::Alert(reload),
        Some(reload) => Reaction::ReloadOk(reload),
        None => Reaction::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str) -> Envelope {
        let path = format!(
            "{}/../testdata/qlik-samples/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(path).expect("sample");
        Envelope::parse(&body).expect("parses")
    }

    #[test]
    fn failed_reloads_of_both_types_alert() {
        for name in [
            "app-reload-failed.legacy.json",
            "app-reload-failed.cloudevents.json",
            "reload-finished-failed.cloudevents.json",
        ] {
            assert!(matches!(react(&sample(name)), Reaction::Alert(_)), "{name}");
        }
    }

    #[test]
    fn successes_and_other_events_do_not() {
        let body = br#"{"specversion":"1.0","id":"e","type":"com.qlik.v1.reload.finished","tenantid":"t","data":{"id":"r","appId":"a","status":"CANCELED"}}"#;
        assert!(matches!(
            react(&Envelope::parse(body).unwrap()),
            Reaction::ReloadOk(_)
        ));
        let body = br#"{"specversion":"1.0","id":"e","type":"com.qlik.v1.space.created","tenantid":"t","data":{}}"#;
        assert_eq!(react(&Envelope::parse(body).unwrap()), Reaction::Other);
    }
}
