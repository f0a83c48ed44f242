//! `check-config`: validates the files as `run` would start with them (tenant ids resolved,
//! certificates read, destinations built) and writes a masked summary or every problem. Above
//! the configuration and the tenant-id resolution, which it puts together.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

use crate::config::ConsumerConfig;

mod warnings;

pub use warnings::warnings;

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
    let loaded = crate::config::load_with_env(path, extensions, env).and_then(|config| {
        resolve_tenant_ids(&config).map_err(|problems| crate::settings::ConfigErrors { problems })
    });
    let (ok, text) = match loaded {
        // What would stop `run` at start-up is reported here, before deployment: the broker's
        // CA and client certificate files are read, and the destinations are built, compiling
        // their templates. Building has no side effect: no destination connects before it sends.
        Ok(config) => match config
            .broker
            .broker_settings()
            .rustls_config()
            .map_err(|e| format!("{}.broker: {e}", crate::settings::FORWARD))
            .and_then(|_| {
                config
                    .build_sinks(crate::sinks::Purpose::Run)
                    .map_err(|e| e.to_string())
            }) {
            Ok(_) => {
                let mut text = crate::config::summary(&config);
                // What works but contradicts itself: said, without failing the check.
                let warnings = warnings(&config);
                if !warnings.is_empty() {
                    let _ = writeln!(text, "Warnings ({}):", warnings.len());
                    for warning in &warnings {
                        let _ = writeln!(text, "  {warning}");
                    }
                }
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
fn resolve_tenant_ids(
    config: &ConsumerConfig,
) -> Result<ConsumerConfig, Vec<crate::settings::Problem>> {
    if !config.tenants.iter().any(|t| t.needs_tenant_id()) {
        return Ok(config.clone());
    }
    let failed = |reason: String| {
        vec![crate::settings::Problem {
            path: crate::config::TENANT.to_owned(),
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
