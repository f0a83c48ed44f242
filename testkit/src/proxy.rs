//! A TCP proxy in front of a broker that a test can break on purpose: cut every open
//! connection (a broker restart, a NAT timeout during a Lambda freeze), stall them (a silently
//! dead path), or stop listening altogether and come back on the same port (a broker that is
//! down, then up again). The embedded broker cannot be stopped; this stands in for it.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    /// Where clients connect (a free loopback port, kept across [`Self::stop`]/[`Self::resume`]).
    pub addr: SocketAddr,
    cut: watch::Sender<u64>,
    stall: watch::Sender<u64>,
    open: watch::Sender<bool>,
    listening: watch::Receiver<bool>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (cut, _) = watch::channel(0u64);
        let (stall, _) = watch::channel(0u64);
        let (open, mut open_rx) = watch::channel(true);
        let (listening_tx, listening) = watch::channel(true);
        let (cuts, stalls) = (cut.clone(), stall.clone());
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(current) = listener.take() else {
                    return;
                };
                loop {
                    tokio::select! {
                        accepted = current.accept() => {
                            let Ok((inbound, _)) = accepted else { continue };
                            tokio::spawn(pipe(inbound, upstream, cuts.subscribe(), stalls.subscribe()));
                        }
                        closing = open_rx.wait_for(|open| !*open) => {
                            if closing.is_err() { return; }
                            break;
                        }
                    }
                }
                drop(current);
                let _ = listening_tx.send(false);
                if open_rx.wait_for(|open| *open).await.is_err() {
                    return;
                }
                listener = Some(
                    TcpListener::bind(addr)
                        .await
                        .expect("the proxy takes its port back"),
                );
                let _ = listening_tx.send(true);
            }
        });
        Self {
            addr,
            cut,
            stall,
            open,
            listening,
        }
    }

    /// Closes every open connection.
    pub fn cut_all(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// Keeps every open connection but moves no more bytes on it.
    pub fn stall_all(&self) {
        self.stall.send_modify(|n| *n += 1);
    }

    /// Stops listening (new connections are refused) and closes every open connection;
    /// returns once the port is closed.
    pub async fn stop(&mut self) {
        let _ = self.open.send(false);
        let _ = self.listening.wait_for(|listening| !*listening).await;
        self.cut_all();
    }

    /// Listens again on the same port; returns once it accepts connections.
    pub async fn resume(&mut self) {
        let _ = self.open.send(true);
        let _ = self.listening.wait_for(|listening| *listening).await;
    }
}

async fn pipe(
    mut inbound: TcpStream,
    upstream: SocketAddr,
    mut cut: watch::Receiver<u64>,
    mut stall: watch::Receiver<u64>,
) {
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.changed() => {}
        _ = stall.changed() => {
            // Keep both sockets open but move nothing: a silently dead path.
            std::future::pending::<()>().await;
        }
    }
}
