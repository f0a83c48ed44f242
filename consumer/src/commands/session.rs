//! `consumer session create|status`: the consumer's persistent session on the broker, made
//! before the webhook is registered so that no event is dropped for want of a session. The
//! broker work lives in [`consumer::source::session`].

use clap::Subcommand;

use consumer::exit;
use consumer::source::session::{Created, SessionError, SessionState, SessionTarget};

use super::load;
use crate::ConfigArgs;

pub const AFTER_HELP: &str = "\
Exit codes:
  0   create: the session exists (created now, or already there); status: the broker holds
      a session for the client id, or the consumer's /healthz says it is running and connected
  66  status: the broker holds no session for the client id (events published now are lost;
      run `consumer session create`)
  69  the MQTT broker cannot be reached (refused, timeout, TLS)
  77  the broker refused the connection (user name, password, client id) or the subscription
      (ACL)
  78  configuration invalid, or broker.cleanSession is true (no session is kept)

Connecting with the client id of a running consumer takes its connection over for a moment:
the broker closes the consumer's connection, the consumer reconnects and gets its
unacknowledged messages again. When Butler.qlikSenseCloud.consumer.metrics.listen is set and
the consumer's /healthz there says it is connected, both commands report that instead of
connecting.";

#[derive(Subcommand)]
pub enum SessionCommand {
    /// Create the consumer's persistent session on the broker, as `run` would: connect with the
    /// configured client id and clean session off (MQTT 5: the configured session expiry),
    /// subscribe with QoS 1, disconnect. Takes no message: whatever is queued stays for `run`.
    /// Do this before registering the webhook, so the broker keeps events from the first one.
    #[command(after_help = AFTER_HELP)]
    Create(ConfigArgs),
    /// Whether the broker holds a session for the consumer's client id (exit 66 when not).
    /// Creates none: a session the check itself opened is removed again.
    #[command(after_help = AFTER_HELP)]
    Status(ConfigArgs),
}

pub async fn run(command: &SessionCommand) -> u8 {
    let (args, create) = match command {
        SessionCommand::Create(args) => (args, true),
        SessionCommand::Status(args) => (args, false),
    };
    let config = match load(args) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let target = SessionTarget::from_config(&config);
    let result = if create {
        target
            .create()
            .await
            .map(|created| report_created(&target, created))
    } else {
        target
            .status()
            .await
            .map(|state| report_status(&target, state))
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e}");
        code_for(&e)
    })
}

fn code_for(e: &SessionError) -> u8 {
    match e {
        SessionError::CleanSession | SessionError::Settings(_) => exit::CONFIG_INVALID,
        SessionError::Unreachable { .. } => exit::UNAVAILABLE,
        SessionError::Refused { .. } => exit::NO_PERMISSION,
    }
}

fn report_created(target: &SessionTarget, created: Created) -> u8 {
    match created {
        Created::Running => print_running(target),
        Created::Subscribed { was_present } => {
            if was_present {
                println!(
                    "session already present on the broker for client id {}",
                    target.client_id()
                );
            } else {
                println!(
                    "session created on the broker for client id {} (there was none)",
                    target.client_id()
                );
            }
            print_session(target);
        }
    }
    exit::OK
}

fn report_status(target: &SessionTarget, state: SessionState) -> u8 {
    match state {
        SessionState::Running => {
            print_running(target);
            exit::OK
        }
        SessionState::Present => {
            println!(
                "session present on the broker for client id {}",
                target.client_id()
            );
            print_session(target);
            exit::OK
        }
        SessionState::Absent => {
            println!(
                "no session on the broker for client id {}: events published now are not kept for the consumer",
                target.client_id()
            );
            println!("  broker:       {}", target.broker());
            println!("  create it:    consumer session create (or start the consumer once)");
            exit::NOT_FOUND
        }
    }
}

fn print_running(target: &SessionTarget) {
    println!(
        "consumer running and subscribed (its /healthz says it is connected): the session for client id {} exists; the broker was not contacted",
        target.client_id()
    );
    print_session(target);
}

fn print_session(target: &SessionTarget) {
    println!("  broker:       {}", target.broker());
    println!("  client id:    {}", target.client_id());
    println!("  subscription: {} (QoS 1)", target.filter());
    match target.expiry() {
        Some(expiry) => println!(
            "  expiry:       {}s after the consumer disconnects (broker.sessionExpirySeconds)",
            expiry.as_secs()
        ),
        None => println!(
            "  expiry:       set by the broker (MQTT 3.1.1; Mosquitto: persistent_client_expiration, never by default)"
        ),
    }
}
