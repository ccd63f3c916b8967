//! The API's HTTP listener: binds the socket (sockets live in `net`) and serves a router.
//!
//! It runs hyper's HTTP/1 connection directly (rather than `axum::serve`) for two things axum's
//! server does not offer: a deadline for the request head ([`HEADER_READ_TIMEOUT`]: a client
//! that opens a connection and sends its headers slowly, or not at all, is disconnected, so a
//! few hundred such sockets cannot hold the listener), and the peer address of every request as
//! an `axum::extract::ConnectInfo<SocketAddr>` extension (failed authentication is limited per
//! address, `api::limits`).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tower_service::Service;

/// How long a connection may take to send a complete request head (request line and headers)
/// once it is open or between requests: after that it is closed without an answer.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

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
    let task = tokio::spawn(accept_loop(listener, router));
    Ok((local, task))
}

async fn accept_loop(listener: TcpListener, router: axum::Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: the condition passes, and retrying in
                // a tight loop would only burn the CPU meanwhile.
                tracing::warn!(error = %e, "the API listener could not accept a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                let mut router = router.clone();
                async move {
                    let response = router.call(req.map(axum::body::Body::new)).await;
                    Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
                }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "API connection ended with an error");
            }
        });
    }
}
