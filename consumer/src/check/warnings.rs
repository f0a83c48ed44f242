//! What `check-config` warns about: a configuration that works, but where one part does not do
//! what it looks like it does. Each warning names the key at fault; none changes the exit code.

use serde_json::Value;

use crate::config::{ConsumerConfig, FORWARD, GenericUrl, Problem};
use crate::digest::{Digest, DigestEntry};
use crate::enrich::AlertContext;
use crate::sinks::mqtt::MqttDestination;
use crate::sinks::template_fields::unknown_fields;
use crate::sinks::{Renders, TemplateSource};

/// The shipped broker ACL (`infra/mosquitto/acl`), whose `user consumer` lines say where the
/// consumer may publish.
const SHIPPED_ACL: &str = include_str!("../../../infra/mosquitto/acl");
const ACL_FILE: &str = "infra/mosquitto/acl";

/// Every warning for `config`, in the order of the keys.
pub fn warnings(config: &ConsumerConfig) -> Vec<Problem> {
    let mut warnings = Vec::new();
    client_id_from_hostname(config, &mut warnings);
    republish_outside_acl(config, SHIPPED_ACL, &mut warnings);
    template_fields(config, &mut warnings);
    warnings
}

fn client_id_from_hostname(config: &ConsumerConfig, warnings: &mut Vec<Problem>) {
    if config.broker.client_id_from_hostname {
        warnings.push(Problem {
            path: format!("{FORWARD}.broker.clientId"),
            message: format!(
                "not set, so it is `{}`, derived from the host name. The broker keeps the \
                 persistent session, and with it every event published while the consumer is \
                 down, under the client id: a new host name (a container, a moved VM) starts an \
                 empty session and those events are lost. Set a fixed clientId",
                config.broker.client_id
            ),
        });
    }
}

/// The `topic write …` (or `readwrite`) patterns of `user consumer` in an ACL file.
fn consumer_write_patterns(acl: &str) -> Vec<&str> {
    let mut patterns = Vec::new();
    let mut consumer = false;
    for line in acl.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["user", name] => consumer = *name == "consumer",
            ["topic", "write" | "readwrite", pattern] | ["topic", pattern] if consumer => {
                patterns.push(*pattern);
            }
            _ => {}
        }
    }
    patterns
}

fn republish_outside_acl(config: &ConsumerConfig, acl: &str, warnings: &mut Vec<Problem>) {
    let Some(mqtt) = config.destinations.get::<MqttDestination>() else {
        return;
    };
    let patterns = consumer_write_patterns(acl);
    // `{tenantId}` and `{appId}` become one sanitized level each.
    let topic = mqtt
        .topic
        .replace("{tenantId}", "tenant")
        .replace("{appId}", "app");
    if patterns
        .iter()
        .any(|pattern| crate::settings::filter_matches(pattern, &topic))
    {
        return;
    }
    let allowed: Vec<String> = patterns
        .iter()
        .map(|p| format!("`topic write {p}`"))
        .collect();
    warnings.push(Problem {
        path: format!("{}.destinations.mqtt.topic", crate::config::CONSUMER),
        message: format!(
            "`{}` is outside what the shipped broker ACL lets the consumer's user publish \
             ({ACL_FILE}: {}): a broker with that ACL refuses these alerts, and with MQTT 3.1.1 \
             Mosquitto drops them silently while the consumer logs them delivered. Use a topic \
             under it (the default is qscloud-alerts/{{tenantId}}/{{appId}}), or allow this one \
             for the consumer's user in your broker's ACL",
            mqtt.topic,
            allowed.join(", ")
        ),
    });
}

/// Every field an alert template can use: the alert context with one generic URL, so
/// `{{#each genericUrls}}` knows what an entry has.
fn alert_shape() -> Value {
    let url = GenericUrl {
        id: String::new(),
        link_text: String::new(),
        comment: String::new(),
        url: String::new(),
    };
    Value::Object(AlertContext::default().with_generic_urls(&[url]).to_json())
}

/// Every field a digest template can use, with one entry that has every field.
fn digest_shape() -> Value {
    let some = Some(String::new());
    let entry = DigestEntry {
        event_id: String::new(),
        tenant_id: String::new(),
        tenant_comment: some.clone(),
        app_id: some.clone(),
        app_name: String::new(),
        app_url: some.clone(),
        reload_id: some.clone(),
        time: some,
        error_line: String::new(),
    };
    let digest = Digest {
        window: String::new(),
        window_start: String::new(),
        window_end: String::new(),
        total: 1,
        part: 1,
        parts: 1,
        entries: vec![entry],
    };
    Value::Object(crate::sinks::digest_context(&digest, ""))
}

fn template_fields(config: &ConsumerConfig, warnings: &mut Vec<Problem>) {
    let (alert, digest) = (alert_shape(), digest_shape());
    for destination in config.destinations_in_order() {
        for template in destination.templates() {
            let (text, what) = match &template.source {
                TemplateSource::Inline(text) => (text.clone(), "the template".to_owned()),
                // Unreadable or broken templates are problems `check-config` reports already.
                TemplateSource::File(path) => match std::fs::read_to_string(path) {
                    Ok(text) => (text, format!("template file {}", path.display())),
                    Err(_) => continue,
                },
            };
            let (shape, reference) = match template.renders {
                Renders::Alert => (&alert, "Alert template fields"),
                Renders::Digest => (&digest, "Digest template fields"),
            };
            let Ok(fields) = unknown_fields(&text, shape) else {
                continue;
            };
            if fields.is_empty() {
                continue;
            }
            let fields: Vec<String> = fields.iter().map(|f| format!("`{{{{{f}}}}}`")).collect();
            warnings.push(Problem {
                path: template.key,
                message: format!(
                    "{what} uses {}, which the {} context never carries: it renders as empty \
                     text (the fields are listed in docs/configuration.md, \"{reference}\")",
                    fields.join(", "),
                    match template.renders {
                        Renders::Alert => "alert",
                        Renders::Digest => "digest",
                    }
                ),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_acl_lets_the_consumer_write_only_under_qscloud_alerts() {
        assert_eq!(consumer_write_patterns(SHIPPED_ACL), ["qscloud-alerts/#"]);
        let acl = "user relay\ntopic write qscloud/#\nuser consumer\ntopic read qscloud/#\n\
                   topic readwrite a/+/b\ntopic c/#\nuser other\ntopic write d/#\n";
        assert_eq!(consumer_write_patterns(acl), ["a/+/b", "c/#"]);
    }

    /// The shipped templates (ours, in `consumer/templates/`) use only fields their context
    /// carries.
    #[test]
    fn the_shipped_templates_use_only_fields_their_context_carries() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "handlebars") {
                continue;
            }
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let shape = if name.contains("digest") {
                digest_shape()
            } else {
                alert_shape()
            };
            let text = std::fs::read_to_string(&path).unwrap();
            assert_eq!(
                unknown_fields(&text, &shape).unwrap(),
                Vec::<String>::new(),
                "{name}"
            );
            checked += 1;
        }
        assert_eq!(checked, 8);
    }

    #[test]
    fn the_shapes_hold_the_documented_fields() {
        let alert = alert_shape();
        for field in [
            "appName",
            "scriptLogTail",
            "qlikSenseQMC",
            "missing",
            "genericUrls",
        ] {
            assert!(alert.get(field).is_some(), "{field}");
        }
        assert!(alert["genericUrls"][0].get("linkText").is_some());
        let digest = digest_shape();
        for field in [
            "total",
            "count",
            "split",
            "tenantId",
            "tenantIds",
            "windowEnd",
        ] {
            assert!(digest.get(field).is_some(), "{field}");
        }
        for field in ["appUrl", "errorLine", "tenantComment", "time", "reloadId"] {
            assert!(digest["alerts"][0].get(field).is_some(), "{field}");
        }
    }
}
