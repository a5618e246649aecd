//! The member's listeners: plain and TLS (handshakes off the accept loop), the gRPC+HTTP
//! server on each, and the metrics-only server of --listen-metrics-urls.

use std::net::SocketAddr;
use std::time::Duration;

use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::service::Routes;
use tracing::{debug, error, warn};

use crate::state::Shared;

/// An address this member cannot listen on.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds one listener.
pub(crate) async fn bind(addr: &SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(|source| ListenError { addr: *addr, source })
}

/// The hosts of URLs (for a generated certificate's names).
pub(crate) fn url_hosts(urls: &[String]) -> Vec<String> {
    let mut hosts: Vec<String> = urls
        .iter()
        .filter_map(|u| u.parse::<http::Uri>().ok())
        .filter_map(|u| u.host().map(|h| h.trim_matches(['[', ']']).to_string()))
        .collect();
    hosts.sort();
    hosts.dedup();
    hosts
}

/// Binds the plain and the TLS listeners of one side (client or peer).
pub(crate) async fn bind_all(
    plain: &[SocketAddr],
    tls: &[SocketAddr],
    acceptor: &Option<TlsAcceptor>,
) -> Result<Vec<(TcpListener, Option<TlsAcceptor>)>, ListenError> {
    let mut out = Vec::new();
    let with_tls = plain.iter().map(|a| (a, None)).chain(tls.iter().map(|a| (a, acceptor.clone())));
    for (addr, acceptor) in with_tls {
        out.push((bind(addr).await?, acceptor));
    }
    Ok(out)
}

/// A TLS handshake that takes longer than this is dropped (a client that never speaks).
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepted TLS connections: each handshake runs on its own task, so a slow or hostile client
/// holds up no one else.
fn tls_incoming(
    listener: TcpListener,
    acceptor: TlsAcceptor,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = tokio::select! {
                _ = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(conn) => conn,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => debug!(peer = %peer, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(peer = %peer, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

pub(crate) async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    routes: Routes,
    mut stop: watch::Receiver<bool>,
    what: &'static str,
    max_streams: Option<u32>,
) {
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let server = tonic::transport::Server::builder()
        .max_concurrent_streams(max_streams)
        .accept_http1(true)
        .http2_keepalive_interval(Some(Duration::from_secs(7200)))
        .add_routes(routes);
    let served = match tls {
        Some(acceptor) => {
            server.serve_with_incoming_shutdown(tls_incoming(listener, acceptor), shutdown).await
        }
        None => {
            let incoming = TcpListenerStream::new(listener).map(|conn| {
                conn.and_then(|s| {
                    s.set_nodelay(true)?;
                    Ok(s)
                })
            });
            server.serve_with_incoming_shutdown(incoming, shutdown).await
        }
    };
    if let Err(e) = served {
        error!(error = %e, server = what, "server stopped with an error");
    }
}

/// `--listen-metrics-urls`: `/metrics` and `/health` only, as etcd serves there.
pub(crate) async fn serve_metrics(listener: TcpListener, state: Shared, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    let served =
        axum::serve(listener, crate::http::metrics_router(state)).with_graceful_shutdown(shutdown).await;
    if let Err(e) = served {
        error!(error = %e, server = "metrics", "server stopped with an error");
    }
}
