//! Log destination: one `warn` line per failed reload, so an operator sees every alert in the
//! consumer's own log even when no chat destination is configured.

use super::{Sink, SinkError};
use crate::alert::Alert;

/// Extension `Butler.qlikSenseCloud.consumer.destinations.log.enable` (default true). No
/// further settings.
#[derive(Debug, Default)]
pub struct LogSink;

impl LogSink {
    pub fn new() -> Self {
        Self
    }
}

impl Sink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    async fn send(&self, alert: &Alert) -> Result<(), SinkError> {
        tracing::warn!(
            target: "consumer::alert",
            event_id = %alert.event_id,
            tenant = %alert.tenant_id,
            app_id = alert.app_id.as_deref().unwrap_or(""),
            app_name = alert.field("appName").unwrap_or(""),
            reload_id = alert.reload_id.as_deref().unwrap_or(""),
            status = alert.field("status").unwrap_or(""),
            error_code = alert.field("errorCode").unwrap_or(""),
            error_message = alert.field("errorMessage").unwrap_or(""),
            app_url = alert.field("appUrl").unwrap_or(""),
            "Qlik Cloud app reload failed"
        );
        Ok(())
    }
}
