//! Log destination: one `warn` line per failed reload, so an operator sees every alert in the
//! consumer's own log even when no chat destination is configured.

use std::sync::Arc;

use super::{BuildError, Destination, Kind, SharedSink, Sink, SinkError, TenantApi};
use crate::alert::Alert;
use crate::config::{ConsumerConfig, Node, Problems};

pub(crate) const KIND: Kind = Kind::Global(parse);

/// Extension `Butler.qlikSenseCloud.consumer.destinations.log.enable` (default true). No
/// further settings.
#[derive(Debug, Default)]
pub struct LogDestination;

fn parse(butler: &Node<'_>, p: &mut Problems) -> Vec<Arc<dyn Destination>> {
    let enable = super::extension_key(butler, "log")
        .child("enable")
        .bool_or(p, true);
    if enable {
        vec![Arc::new(LogDestination)]
    } else {
        vec![]
    }
}

impl Destination for LogDestination {
    fn summary(&self, _config: &ConsumerConfig) -> Option<String> {
        Some("log".to_owned())
    }

    /// The line shows what the alert carries; it asks for nothing of its own, so it does not
    /// undo the other destinations' `basicContentOnly`.
    fn tenant_api(&self) -> Option<TenantApi> {
        None
    }

    fn build(&self, _: &ConsumerConfig, _: &reqwest::Client) -> Result<SharedSink, BuildError> {
        Ok(Arc::new(LogSink::new()))
    }
}

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
