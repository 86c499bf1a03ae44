//! Listening and serving connections: plain HTTP or TLS (rustls) per the web configuration in force when the
//! connection is accepted, HTTP/1.1 with header size and read-time limits, graceful shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use axum::{Router, body::Body, extract::Request};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tower::ServiceExt;

use crate::webconfig::{WebConfig, WebConfigSource};

/// Largest request head (request line + headers) accepted; hyper answers 431 beyond it.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// A client must send its request head (and a TLS client its handshake) within this time.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for requests in flight.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Binds every address first (so a bad one fails start-up before anything is served), then serves until
/// `shutdown` flips to true.
pub async fn serve(
    addrs: &[SocketAddr],
    app: Router,
    config: Arc<WebConfigSource>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut listeners = Vec::new();
    for addr in addrs {
        let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let scheme = if config.is_tls() { "https" } else { "http" };
        tracing::info!("listening on {scheme}://{}", l.local_addr()?);
        listeners.push(l);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for l in listeners {
        tasks.spawn(accept_loop(l, app.clone(), config.clone(), shutdown.clone()));
    }
    while let Some(res) = tasks.join_next().await {
        res.context("HTTP server task panicked")?;
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    app: Router,
    config: Arc<WebConfigSource>,
    mut shutdown: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = async {
                let _ = shutdown.wait_for(|stop| *stop).await;
            } => break,
        };
        let web = config.current();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            if let Err(e) = connection(stream, web, app, watcher).await {
                tracing::debug!(%peer, "connection: {e:#}");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
}

async fn connection(
    stream: TcpStream,
    web: Arc<WebConfig>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) -> anyhow::Result<()> {
    let _ = stream.set_nodelay(true);
    match web.tls.clone() {
        None => http(stream, web, app, watcher).await,
        Some(tls) => {
            let mut first = [0u8; 1];
            let n = tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first))
                .await
                .context("TLS handshake timeout")??;
            if n == 1 && first[0] != 0x16 {
                // Not a TLS handshake record: most likely plain HTTP. Say so, as Go's servers do, and close.
                let mut stream = stream;
                let body = "{\"error\":\"client sent an HTTP request to an HTTPS server\"}";
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                let _ = stream.shutdown().await;
                anyhow::bail!("plain HTTP on the TLS port");
            }
            let accepted = tokio::time::timeout(HEAD_TIMEOUT, tokio_rustls::TlsAcceptor::from(tls).accept(stream))
                .await
                .context("TLS handshake timeout")?
                .context("TLS handshake")?;
            http(accepted, web, app, watcher).await
        }
    }
}

async fn http<S>(
    io: S,
    web: Arc<WebConfig>,
    app: Router,
    watcher: hyper_util::server::graceful::Watcher,
) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(web.clone());
        app.clone().oneshot(req.map(Body::new))
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(HEAD_TIMEOUT).max_buf_size(MAX_HEAD_BYTES);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    watcher.watch(conn).await.context("serving HTTP")
}
