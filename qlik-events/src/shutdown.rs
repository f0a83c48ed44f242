//! The stop request both programs honour: Ctrl-C, or SIGTERM from systemd, Docker or Lambda's
//! shutdown phase.

/// Completes on the first SIGINT or SIGTERM. Where SIGTERM cannot be watched (or off Unix),
/// only Ctrl-C stops.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
