//! `consumer`: Qlik Cloud reload-failure alerts from MQTT, configured by Butler's YAML.
//!
//! This file holds the command line, logging and the async runtime, and dispatches each command
//! to its module in `commands/`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use consumer::config;
use consumer::exit;

mod commands;

use commands::webhook;

const AFTER_HELP: &str = "\
Exit codes:
  0   success (replay, replay --list: nothing (left) parked; preview: every destination
      rendered)
  1   runtime failure (subscription refused, state directory not writable, alert neither
      delivered nor parked); webhook status: a webhook to the relay is disabled or missing;
      preview: a destination did not render (its name and the template error are printed)
  2   command-line usage error; preview: the event is not a failed reload of a configured
      tenant (unreadable, not a Qlik event, another tenant, not a failed reload)
  65  webhook: Qlik refused the request as invalid; webhook create: a webhook already sends
      some of the event types to the same URL, grouped otherwise (--force creates anyway)
  66  webhook: no webhook with that id or name; session status: the broker holds no session
      for the client id
  69  session: the MQTT broker cannot be reached
  75  replay: some alerts could not be delivered and are still parked; replay --list: at
      least one alert is parked;
      webhook resend-failed: some resends failed; webhook status: nothing known yet
  77  webhook: the tenant did not accept the JWT, or its user lacks the rights; session: the
      broker refused the connection or the subscription
  78  configuration invalid (every problem is printed with its key path); run: also what
      check-config reports at start (a template that does not compile, broker certificates)

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
        /// List parked alerts without sending anything. Exit 75 when at least one alert is
        /// parked (or held, or unreadable), 0 when none is: for monitoring scripts.
        #[arg(long)]
        list: bool,
    },
    /// Run one Qlik event (a JSON file) through parsing, tenant match, enrichment and every
    /// destination's templates, and print what each destination would receive. Sends nothing,
    /// stores nothing (no dedupe entry, no rate-limit window, no parked file, no MQTT
    /// connection). For editing Butler's Handlebars templates.
    #[command(after_help = AFTER_HELP)]
    Preview {
        #[command(flatten)]
        config: ConfigArgs,
        /// The event: a JSON file in the legacy, hybrid or CloudEvents envelope.
        #[arg(long, value_name = "EVENT.json")]
        event: PathBuf,
        /// Only this destination: its name (`slack:<tenantId>`, `email:<tenantId>/<address>`,
        /// `webhook:ops`, `mqtt`, `log`, `script-log-disk`) or the start of it (`slack`).
        #[arg(long, value_name = "NAME")]
        destination: Option<String>,
    },
    /// Register the relay's webhooks in Qlik Cloud through the tenant API (create, list,
    /// delete, enable, disable), and resend failed deliveries after an outage.
    #[command(subcommand, after_help = webhook::AFTER_HELP)]
    Webhook(webhook::WebhookCommand),
    /// The consumer's persistent session on the broker: create it before registering the
    /// webhook (the broker keeps events only for a session that exists), or check it.
    #[command(subcommand, after_help = commands::session::AFTER_HELP)]
    Session(commands::session::SessionCommand),
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    // check-config needs neither logging nor the runtime: its report is all it prints.
    if let Command::CheckConfig(args) = &cli.command {
        return ExitCode::from(commands::check_config::run(args));
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
            Command::Run(args) => commands::run::run(args).await,
            Command::Replay { config, sink, list } => {
                commands::replay::run(config, sink.as_deref(), *list).await
            }
            Command::Preview {
                config,
                event,
                destination,
            } => commands::preview::run(config, event, destination.as_deref()).await,
            Command::Webhook(command) => Ok(webhook::run(command).await),
            Command::Session(command) => Ok(commands::session::run(command).await),
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
