//! The API's HTTP listener: binds the socket (sockets live in `net`) and serves a router.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Binds `addr` and serves `router` on it in a task; returns the bound address (port 0 picks
/// one) and the task.
pub async fn serve(
    addr: SocketAddr,
    router: axum::Router,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot listen for the API on {addr}: {e}"),
        )
    })?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            tracing::error!(error = %e, "the API listener stopped");
        }
    });
    Ok((local, task))
}
