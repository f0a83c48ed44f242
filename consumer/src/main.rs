//! `consumer`: Qlik Cloud reload-failure alerts from MQTT, configured by Butler's YAML.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

use consumer::config::{self, ConsumerConfig};
use consumer::delivery::{self, DeadLetter, RetryPolicy};
use consumer::exit;
use consumer::pipeline::{self, RunOptions};

mod webhook_cmd;

const AFTER_HELP: &str = "\
Exit codes:
  0   success (replay: nothing left parked)
  1   runtime failure (subscription refused, state directory not writable, alert neither
      delivered nor parked)
  2   command-line usage error
  65  webhook: Qlik refused the request as invalid
  66  webhook: no webhook with that id or name
  75  replay: some alerts could not be delivered and are still parked;
      webhook resend-failed: some resends failed
  77  webhook: the tenant did not accept the JWT, or its user lacks the rights
  78  configuration invalid (every problem is printed with its key path)

Environment:
  QLIK_TENANT_JWT_<TENANTID>, QLIK_TENANT_JWT   tenant API token instead of auth.jwt.token
  MQTT_PASSWORD                                 broker password instead of broker.password
  SMTP_PASSWORD                                 SMTP password instead of emailNotification.smtp.auth.password
  REDIS_PASSWORD                                password of a redis:// / rediss:// consumer.stateStore
  RUST_LOG                                      log filter, e.g. info or consumer=debug";

#[derive(Parser)]
#[command(
    name = "consumer",
    version,
    about = "Qlik Cloud reload-failure alerts from MQTT, configured by Butler's own YAML file",
    long_about = "Subscribes to the Qlik Cloud events a relay puts on MQTT (legacy, hybrid and \
CloudEvents envelopes), keeps those of the configured tenants, and turns failed reloads into \
alerts: log, script log on disk, Slack, Teams, email, generic webhooks, MQTT. Nothing is lost: messages \
are acknowledged only after the alert was delivered or parked in the dead-letter directory, \
which `consumer replay` re-sends.",
    after_help = AFTER_HELP
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true, env = "CONSUMER_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Butler's YAML configuration file, used unchanged.
    #[arg(long, short, value_name = "FILE", env = "CONSUMER_CONFIG")]
    config: PathBuf,
    /// Extension file with the keys Butler does not know (several tenants, TLS, client id,
    /// state directory, destinations). Default: consumer.yaml beside --config, when it exists.
    #[arg(long, short, value_name = "FILE", env = "CONSUMER_EXTENSIONS")]
    extensions: Option<PathBuf>,
}

impl ConfigArgs {
    fn extensions(&self) -> Option<PathBuf> {
        self.extensions.clone().or_else(|| {
            let beside = config::default_extensions_path(&self.config);
            beside.is_file().then_some(beside)
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Subscribe and alert on failed reloads until stopped (SIGINT / SIGTERM).
    #[command(after_help = AFTER_HELP)]
    Run(ConfigArgs),
    /// Validate the configuration: print a summary with secrets masked, or every problem with
    /// its exact key path (exit 78).
    #[command(name = "check-config", after_help = AFTER_HELP)]
    CheckConfig(ConfigArgs),
    /// Re-send the alerts parked in the dead-letter directory through their sinks; each file is
    /// deleted only after its alert was delivered. Exit 75 when some are still parked.
    #[command(after_help = AFTER_HELP)]
    Replay {
        #[command(flatten)]
        config: ConfigArgs,
        /// Only alerts parked by this sink (e.g. `slack:<tenantId>`, `webhook:ops`).
        #[arg(long, value_name = "NAME")]
        sink: Option<String>,
        /// List parked alerts without sending anything.
        #[arg(long)]
        list: bool,
    },
    /// Register the relay's webhooks in Qlik Cloud through the tenant API (create, list,
    /// delete, enable, disable), and resend failed deliveries after an outage.
    #[command(subcommand, after_help = webhook_cmd::AFTER_HELP)]
    Webhook(webhook_cmd::WebhookCommand),
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal, not in journald, files or pipes.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Loads the configuration or prints every problem; `Err` carries the exit code.
fn load(args: &ConfigArgs) -> Result<ConsumerConfig, u8> {
    let extensions = args.extensions();
    config::load(&args.config, extensions.as_deref()).map_err(|errors| {
        eprintln!("{errors}");
        exit::CONFIG_INVALID
    })
}

async fn run(args: &ConfigArgs) -> anyhow::Result<u8> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    pipeline::run(
        config,
        qlik_events::shutdown_signal(),
        RunOptions::default(),
    )
    .await
    .context("consumer run failed")?;
    Ok(exit::OK)
}

fn list_parked(dir: &Path, only_sink: Option<&str>) -> anyhow::Result<u8> {
    let dead_letter = DeadLetter::new(dir);
    let files = dead_letter.list().context("listing parked alerts")?;
    let mut shown = 0;
    for path in &files {
        match DeadLetter::read(path) {
            Ok(parked) if only_sink.is_none_or(|s| s == parked.sink) => {
                shown += 1;
                println!(
                    "{}\t{}\t{}\tattempts={}\t{}",
                    parked.parked_at,
                    parked.sink,
                    parked.alert.describe(),
                    parked.attempts,
                    parked.error
                );
            }
            Ok(_) => {}
            Err(e) => println!("{e}"),
        }
    }
    eprintln!("{shown} parked alert(s) in {}", dir.display());
    list_parked_messages(dir)?;
    Ok(exit::OK)
}

/// Raw messages the pipeline parked (a panic or error while handling them): listed, never
/// re-sent by `replay`, since they are not alerts yet.
fn list_parked_messages(dir: &Path) -> anyhow::Result<usize> {
    let messages =
        delivery::parked_message::list_messages(dir).context("listing parked raw messages")?;
    for (path, message) in &messages {
        println!(
            "{}	message	{}	{}	{}",
            message.parked_at,
            message.topic,
            message.reason,
            path.display()
        );
    }
    if !messages.is_empty() {
        eprintln!(
            "{} parked raw message(s) in {}: publish a payload again to its topic to handle it anew",
            messages.len(),
            delivery::parked_message::messages_dir(dir).display()
        );
    }
    Ok(messages.len())
}

async fn replay(args: &ConfigArgs, only_sink: Option<&str>, list: bool) -> anyhow::Result<u8> {
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return Ok(code),
    };
    if list {
        return list_parked(&config.dead_letter_dir, only_sink);
    }
    // The sinks only: no queue or worker, which would redeliver on their own.
    let sinks = consumer::sinks::build(&config).context("building sinks")?;
    let report = delivery::replay(
        &DeadLetter::new(&config.dead_letter_dir),
        &sinks,
        &RetryPolicy::from(&config.retry),
        only_sink,
    )
    .await
    .context("replaying parked alerts")?;
    eprintln!(
        "replay: {} delivered, {} still failing, {} for unknown sinks, {} unreadable",
        report.delivered, report.failed, report.unknown_sink, report.unreadable
    );
    list_parked_messages(&config.dead_letter_dir)?;
    Ok(if report.remaining() == 0 {
        exit::OK
    } else {
        exit::TRY_AGAIN_LATER
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CheckConfig(args) = &cli.command {
        let extensions = args.extensions();
        let code =
            config::check_config(&args.config, extensions.as_deref(), &mut std::io::stdout());
        return ExitCode::from(u8::try_from(code).unwrap_or(exit::FAILURE));
    }
    init_logging(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILURE);
        }
    };
    let result = runtime.block_on(async {
        match &cli.command {
            Command::Run(args) => run(args).await,
            Command::Replay { config, sink, list } => replay(config, sink.as_deref(), *list).await,
            Command::Webhook(command) => Ok(webhook_cmd::run(command).await),
            Command::CheckConfig(_) => Ok(exit::OK),
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(exit::FAILURE)
        }
    }
}
