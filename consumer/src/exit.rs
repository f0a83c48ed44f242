//! The process exit codes of every `consumer` command, defined once: scripts and service
//! managers rely on them, and the `--help` texts in `main.rs` list them. The non-zero codes
//! besides 1 and 2 follow sysexits.h, so they mean what an operator expects.

/// Success (for `replay` and `replay --list`: nothing is (left) parked).
pub const OK: u8 = 0;
/// A runtime failure: broker refused the subscription, state directory not writable, an alert
/// could neither be delivered nor parked; for `webhook`: tenant unreachable, timeouts, HTTP 5xx
/// after retries, an unexpected answer; for `webhook status`: a webhook to the relay is
/// disabled or missing; for `preview`: a destination did not render (a template error).
pub const FAILURE: u8 = 1;
/// Command-line usage error (clap's own code; also a missing or invalid webhook secret, several
/// tenants and no `--tenant`, `--since` beyond 7 days; for `preview`: an event that is not a
/// failed reload of a configured tenant, or a `--destination` that names none).
pub const USAGE: u8 = 2;
/// `webhook`: Qlik refused the request as invalid (HTTP 400/409/422; its message is printed);
/// `webhook create`: a webhook already sends other event types to the same URL (`--force`
/// creates anyway) (`EX_DATAERR`).
pub const REJECTED: u8 = 65;
/// `webhook`: no webhook with that id or name (HTTP 404); `session status`: the broker holds
/// no session for the consumer's client id (`EX_NOINPUT`).
pub const NOT_FOUND: u8 = 66;
/// `session`: the MQTT broker cannot be reached (refused connection, timeout, TLS handshake
/// failed) (`EX_UNAVAILABLE`).
pub const UNAVAILABLE: u8 = 69;
/// Something is left to do and a later run may succeed (`EX_TEMPFAIL`): `replay` left parked
/// alerts that still fail, `replay --list` found at least one parked, `webhook resend-failed` could not resend some deliveries,
/// `webhook status` has no check to report yet (or the last one could not reach the tenant).
pub const TRY_AGAIN_LATER: u8 = 75;
/// `webhook`: the tenant did not accept the JWT (401) or its user lacks the rights (403);
/// `session`: the broker refused the connection (user name, password, client id) or the
/// subscription (ACL) (`EX_NOPERM`).
pub const NO_PERMISSION: u8 = 77;
/// The configuration is invalid (`EX_CONFIG`), so scripts can tell it apart from usage errors
/// and runtime failures; every problem is printed with its key path. `run` uses it for
/// everything `check-config` reports, also what only shows when it starts (a template that does
/// not compile, a broker certificate that does not load, a tenant id that cannot be resolved).
pub const CONFIG_INVALID: u8 = 78;
