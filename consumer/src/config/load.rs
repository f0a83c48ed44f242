//! Reading the files: Butler's YAML, the optional extension file merged over it, then parsing
//! ([`super::parse`]).

use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use super::consumer::ConsumerConfig;
use crate::settings::{ConfigErrors, Problem};

/// A minimal valid configuration for unit tests: tenant `T` on a test broker, with `alert`
/// as the tenant's `alert` block and `consumer` (YAML lines, 4 spaces deep) added to the
/// consumer section, state in `dir`.
#[cfg(test)]
pub(crate) fn for_tests(dir: &Path, alert: &str, consumer: &str) -> ConsumerConfig {
    let butler = dir.join("butler.yaml");
    let text = format!(
        "Butler:
  mqttConfig:
    qlikSenseCloud:
      event:
        mqttForward:
          enable: true
          broker: {{host: 127.0.0.1, port: 1, tls: false}}
          topic: {{subscriptionRoot: 'qscloud/#', appReload: qscloud/app/reload}}
  qlikSenseCloud:
    enable: true
    event:
      mqtt:
        tenant:
          id: T
          tenantUrl: http://127.0.0.1:9
          authType: jwt
          auth: {{jwt: {{token: a.b.c}}}}
          alert: {{{alert}}}
    consumer:
      stateDirectory: {}
      enrichment: {{enable: false}}
{consumer}",
        dir.join("state").display()
    );
    if let Err(e) = std::fs::write(&butler, text) {
        panic!("cannot write {}: {e}", butler.display());
    }
    load(&butler, None).unwrap_or_else(|e| panic!("{e}"))
}

/// Loads and validates the configuration, taking secrets from the process environment
/// (`QLIK_TENANT_JWT_<TENANTID>`, `QLIK_TENANT_JWT`, `MQTT_PASSWORD`, `SMTP_PASSWORD`) where set.
pub fn load(path: &Path, extensions: Option<&Path>) -> Result<ConsumerConfig, ConfigErrors> {
    load_with_env(path, extensions, &|name| std::env::var(name).ok())
}

/// [`load`] with the environment supplied by the caller, so tests need not mutate the process
/// environment (which is unsafe with threads running).
pub fn load_with_env(
    path: &Path,
    extensions: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ConsumerConfig, ConfigErrors> {
    let mut problems = Vec::new();
    let main = read_yaml(path, &mut problems);
    let ext = extensions.map(|p| read_yaml(p, &mut problems));
    let (Some(mut doc), None | Some(Some(_))) = (main, ext.as_ref()) else {
        return Err(ConfigErrors { problems });
    };
    let mut sources = vec![path.to_owned()];
    if let (Some(Some(ext)), Some(ext_path)) = (ext, extensions) {
        if ext.as_mapping().and_then(|m| m.get("Butler")).is_none() {
            return Err(ConfigErrors {
                problems: vec![Problem {
                    path: ext_path.display().to_string(),
                    message: "extension file must have the same shape as Butler's: a top-level `Butler:` key"
                        .to_owned(),
                }],
            });
        }
        merge(&mut doc, ext);
        sources.push(ext_path.to_owned());
    }
    super::parse::parse(&doc, sources, env).map_err(|problems| ConfigErrors { problems })
}

fn read_yaml(path: &Path, problems: &mut Vec<Problem>) -> Option<Value> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            problems.push(Problem {
                path: path.display().to_string(),
                message: format!("cannot read: {e}"),
            });
            return None;
        }
    };
    match serde_yaml_ng::from_str::<Value>(&text) {
        // Butler's YAML uses merge keys (`<<:`) in some installations; resolve them like node-config.
        Ok(mut value) => match value.apply_merge() {
            Ok(()) => Some(value),
            Err(e) => {
                problems.push(Problem {
                    path: path.display().to_string(),
                    message: format!("invalid YAML merge key: {e}"),
                });
                None
            }
        },
        Err(e) => {
            // serde_yaml_ng reports syntax errors with a location, not with the offending text.
            problems.push(Problem {
                path: path.display().to_string(),
                message: format!("not valid YAML: {e}"),
            });
            None
        }
    }
}

/// Mappings merge key by key; any other value in `overlay` replaces the one in `base`.
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) if !value.is_null() => merge(existing, value),
                    Some(_) => {}
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Default location of the extension file next to the main file: `consumer.yaml` in the same
/// directory. Callers may use it when `--extensions` is not given and the file exists.
pub fn default_extensions_path(main: &Path) -> PathBuf {
    main.parent()
        .unwrap_or_else(|| Path::new("."))
        .join("consumer.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Machine destinations fold only with their own `digest` block, and `consumer.digest.enable:
    /// false` turns every digest off, those blocks included.
    #[test]
    fn machine_destinations_digest_only_with_their_own_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slack = "slackNotification: {reloadAppFailure: {enable: true, \
                     webhookURL: 'https://hooks.slack.com/services/T/B/x', messageType: basic, \
                     basicMsgTemplate: x}}";
        for enable in [true, false] {
            let config = for_tests(
                dir.path(),
                slack,
                &format!(
                    "      digest: {{enable: {enable}, afterAlerts: 4, windowSeconds: 120}}
      destinations:
        webhook:
          - {{name: plain, url: 'http://127.0.0.1:9/a'}}
          - {{name: folded, url: 'http://127.0.0.1:9/b', digest: {{afterAlerts: 10, windowSeconds: 30}}}}
        mqtt: {{enable: true, digest: {{windowSeconds: 15}}}}
"
                ),
            );
            let sinks = config
                .build_sinks(crate::sinks::Purpose::Run)
                .expect("builds");
            let digest_of = |name: &str| {
                sinks
                    .iter()
                    .find(|s| s.name() == name)
                    .unwrap_or_else(|| panic!("no sink {name}"))
                    .digest()
                    .map(|d| (d.after_alerts, d.window.as_secs()))
            };
            let on = |settings| if enable { Some(settings) } else { None };
            assert_eq!(digest_of("slack:T"), on((4, 120)));
            assert_eq!(digest_of("webhook:plain"), None);
            assert_eq!(digest_of("webhook:folded"), on((10, 30)));
            // Absent keys of an own block take the defaults, not the consumer's settings.
            assert_eq!(digest_of("mqtt"), on((3, 15)));
            assert_eq!(digest_of("log"), None);
        }
    }

    #[test]
    fn merge_overlays_mappings_and_replaces_the_rest() {
        let mut base: Value =
            serde_yaml_ng::from_str("a: {b: 1, c: [1, 2], d: x}\ne: 5").expect("yaml");
        let overlay: Value =
            serde_yaml_ng::from_str("a: {b: 2, c: [3], f: y, d: null}\ng: 6").expect("yaml");
        merge(&mut base, overlay);
        let want: Value =
            serde_yaml_ng::from_str("a: {b: 2, c: [3], d: x, f: y}\ne: 5\ng: 6").expect("yaml");
        assert_eq!(base, want);
    }
}
