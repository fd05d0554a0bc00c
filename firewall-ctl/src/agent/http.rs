//! The metrics endpoint: `GET /metrics`, the exposition of
//! [`crate::agent::metrics`] in the format the request's `Accept` header prefers
//! (OpenMetrics for a Prometheus server, else the 0.0.4 text), read from
//! the kernel on every scrape.
//!
//! It must never cost the agent its other duties, whatever a local user
//! does to it:
//! - a port that cannot be bound (another process holds it) is reported
//!   once and tried again every [`RETRY_BIND`]; hotplug and flow logs carry
//!   on meanwhile;
//! - at most [`MAX_CONNECTIONS`] connections are served at once; one more
//!   is accepted and closed at once (so it holds no descriptor and waits in
//!   no queue);
//! - a connection that sends no complete request head within
//!   [`IDLE_TIMEOUT`] — a new one, or a kept-alive one between requests — is
//!   closed, and none lives longer than [`MAX_LIFETIME`].
use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use super::Shared;
use crate::agent::metrics::{self, Format};

/// Connections served at once. A Prometheus server keeps one; a few more
/// leave room for people with curl.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a connection may wait before its next request head is complete.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a connection is kept, busy or not.
pub const MAX_LIFETIME: Duration = Duration::from_secs(120);
/// How often a port that could not be bound is tried again.
pub const RETRY_BIND: Duration = Duration::from_secs(2);

/// Serves metrics on `addr`, bound in network namespace `home`, until the
/// agent stops; binds again whenever that fails.
pub async fn serve_forever(addr: SocketAddr, home: std::fs::File, shared: Arc<Shared>) {
    let home = Arc::new(home);
    let app = Router::new().route("/metrics", get(scrape)).with_state(shared);
    let mut last_error = String::new();
    loop {
        let home = home.clone();
        let bound = tokio::task::spawn_blocking(move || bind_in(&home, addr)).await;
        match bound.map_err(anyhow::Error::from).and_then(|b| b) {
            Ok(listener) => {
                last_error.clear();
                match listener.local_addr() {
                    Ok(at) => eprintln!("sgctl agent: metrics on http://{at}/metrics"),
                    Err(_) => eprintln!("sgctl agent: metrics on http://{addr}/metrics"),
                }
                let e = accept_loop(listener, app.clone()).await;
                eprintln!("sgctl agent: metrics: {e}; listening again");
            }
            Err(e) => {
                let e = format!("{e:#}");
                if e != last_error {
                    eprintln!(
                        "sgctl agent: metrics: cannot listen on {addr}: {e}; hotplug and flow logs carry on, \
                         trying again every {} s",
                        RETRY_BIND.as_secs()
                    );
                    last_error = e;
                }
            }
        }
        tokio::time::sleep(RETRY_BIND).await;
    }
}

/// Binds `addr` in network namespace `home`, on a thread of its own (a
/// namespace is a thread's; the agent's other threads may be in another).
fn bind_in(home: &std::fs::File, addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    let home = home.try_clone().context("duplicating the namespace descriptor")?;
    let listener = std::thread::scope(|s| {
        s.spawn(move || -> anyhow::Result<std::net::TcpListener> {
            nix::sched::setns(home, nix::sched::CloneFlags::CLONE_NEWNET)
                .context("entering the namespace to bind in")?;
            Ok(std::net::TcpListener::bind(addr)?)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the binding thread panicked"))?
    })?;
    listener.set_nonblocking(true)?;
    Ok(tokio::net::TcpListener::from_std(listener)?)
}

/// Accepts and serves connections within the limits above; returns only
/// when the listener itself fails.
async fn accept_loop(listener: tokio::net::TcpListener, app: Router) -> std::io::Error {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            // Out of descriptors or memory, or the peer gave up: wait a
            // moment, the listener is fine.
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) => return e,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| app.clone().oneshot(request));
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(IDLE_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(MAX_LIFETIME, connection).await;
            drop(slot);
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted, OutOfMemory, WouldBlock};
    matches!(e.kind(), ConnectionAborted | ConnectionReset | Interrupted | WouldBlock | OutOfMemory)
        || matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

async fn scrape(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut sample = metrics::sample(&shared.targets()?)?;
        sample.repairs = shared
            .repairs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|((interface, kind), n)| metrics::Repair {
                netns: shared.place.netns.clone().unwrap_or_default(),
                interface: interface.clone(),
                kind,
                count: *n,
            })
            .collect();
        metrics::encode_sample(&sample, format)
    })
    .await;
    match text {
        Ok(Ok(text)) => (StatusCode::OK, [(header::CONTENT_TYPE, format.content_type())], text),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("sgctl agent: {e:#}\n"))
        }
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("sgctl agent: {e}\n"))
        }
    }
}
