//! `check-config`: a masked, human-readable summary, or the list of problems.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use super::ConsumerConfig;

/// `check-config` found nothing wrong ([`crate::exit::OK`]).
pub const EXIT_OK: i32 = crate::exit::OK as i32;
/// The configuration cannot be used ([`crate::exit::CONFIG_INVALID`]).
pub const EXIT_CONFIG_INVALID: i32 = crate::exit::CONFIG_INVALID as i32;

/// Validates the files and writes either a masked summary or every problem to `out`. Returns
/// the process exit code: [`EXIT_OK`] or [`EXIT_CONFIG_INVALID`].
pub fn check_config(path: &Path, extensions: Option<&Path>, out: &mut dyn Write) -> i32 {
    check_config_with_env(path, extensions, &|name| std::env::var(name).ok(), out)
}

/// [`check_config`] with the environment supplied by the caller.
pub fn check_config_with_env(
    path: &Path,
    extensions: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
) -> i32 {
    // A tenant given by hostname is resolved to its id through the tenant API, as `run` does.
    let loaded = super::load_with_env(path, extensions, env).and_then(|config| {
        resolve_tenant_ids(&config).map_err(|problems| super::ConfigErrors { problems })
    });
    let (ok, text) = match loaded {
        // What would stop `run` at start-up is reported here, before deployment: the broker's
        // CA and client certificate files are read, and the destinations are built, compiling
        // their templates. Building has no side effect: no destination connects before it sends.
        Ok(config) => match config
            .broker
            .broker_settings()
            .rustls_config()
            .map_err(|e| format!("{}.broker: {e}", super::FORWARD))
            .and_then(|_| {
                config
                    .build_sinks(crate::sinks::Purpose::Run)
                    .map_err(|e| e.to_string())
            }) {
            Ok(_) => {
                let mut text = summary(&config);
                text.push_str("Configuration OK\n");
                (true, text)
            }
            Err(problem) => (
                false,
                format!("Configuration has 1 problem:\n  {problem}\nConfiguration NOT OK\n"),
            ),
        },
        Err(errors) => {
            let mut text = String::new();
            let n = errors.problems.len();
            let _ = writeln!(
                text,
                "Configuration has {n} problem{}:",
                if n == 1 { "" } else { "s" }
            );
            for problem in &errors.problems {
                let _ = writeln!(text, "  {problem}");
            }
            let _ = writeln!(text, "Configuration NOT OK");
            (false, text)
        }
    };
    // A failed write to stdout (closed pipe) should not turn a valid config into a failure.
    let _ = out.write_all(text.as_bytes());
    if ok { EXIT_OK } else { EXIT_CONFIG_INVALID }
}

/// `config` with every tenant given by hostname resolved ([`crate::tenant_id::resolve_all`]);
/// without one, no call and no runtime. The resolution runs on a thread of its own with its own
/// runtime, so this works from synchronous and asynchronous callers alike.
fn resolve_tenant_ids(config: &ConsumerConfig) -> Result<ConsumerConfig, Vec<super::Problem>> {
    if !config.tenants.iter().any(|t| t.needs_tenant_id()) {
        return Ok(config.clone());
    }
    let failed = |reason: String| {
        vec![super::Problem {
            path: super::TENANT.to_owned(),
            message: format!("cannot resolve the tenant ids: {reason}"),
        }]
    };
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| failed(e.to_string()))?
                    .block_on(crate::tenant_id::resolve_all(config))
            })
            .join()
            .unwrap_or_else(|_| Err(failed("the resolution panicked".to_owned())))
    })
}

/// A summary of what the consumer will do, with every secret masked: JWTs and passwords show
/// only where they came from, webhook URLs only scheme and host.
pub fn summary(config: &ConsumerConfig) -> String {
    let mut s = String::new();
    let files: Vec<String> = config
        .sources
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let _ = writeln!(s, "Files: {}", files.join(" + "));
    let _ = writeln!(s, "Tenants ({}):", config.tenants.len());
    for tenant in &config.tenants {
        tenant.summary(&mut s);
    }
    config.broker.summary(&mut s);
    if let Some(smtp) = &config.smtp {
        smtp.summary(&mut s);
    }
    let _ = writeln!(
        s,
        "Topics: subscribe to {} (app reload topic {})",
        config.topics.subscription_filter(),
        config.topics.app_reload
    );
    let _ = writeln!(s, "Destinations for failed reloads:");
    let context = config.sink_context();
    for destination in config.destinations_in_order() {
        if let Some(line) = destination.summary(&context) {
            let _ = writeln!(s, "  - {line}");
        }
    }
    settings_summary(&mut s, config);
    s
}

/// The closing lines of the `check-config` summary: state, delivery, tenant API.
/// The consumer section's values, every key as declared once in [`crate::settings`] (so a
/// new key shows here without a line of its own), then what those keys mean together.
fn settings_summary(s: &mut String, config: &ConsumerConfig) {
    let c = &config.consumer;
    let _ = writeln!(
        s,
        "State: {}; dead letters: {}; store: {}; metrics: {}",
        c.state_dir.display(),
        c.dead_letter_dir.display(),
        match &c.ha.state_store {
            crate::settings::StateStoreConfig::File => "files in the state directory".to_owned(),
            crate::settings::StateStoreConfig::Redis(url) =>
                format!("{url} (claim lease {}s)", c.ha.claim_lease.as_secs()),
        },
        c.ha.metrics_listen
            .map_or_else(|| "off".to_owned(), |a| format!("http://{a}/metrics"))
    );
    let _ = writeln!(s, "Consumer settings ({}):", crate::settings::CONSUMER);
    for line in c.summary_lines() {
        let _ = writeln!(s, "  {line}");
    }
    let watched: Vec<String> = config
        .tenants
        .iter()
        .filter_map(|t| {
            config
                .relay_url_of(t)
                .map(|url| format!("{} → {}", t.id, url.as_str().trim_end_matches('/')))
        })
        .collect();
    let _ = writeln!(
        s,
        "Webhook watchdog: {}",
        if watched.is_empty() {
            "off (no watchdog.relayUrl)".to_owned()
        } else {
            watched.join(", ")
        }
    );
}
