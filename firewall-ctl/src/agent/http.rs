//! The metrics endpoint: `GET /metrics`, the exposition of
//! [`crate::metrics`] in the format the request's `Accept` header prefers
//! (OpenMetrics for a Prometheus server, else the 0.0.4 text), read from
//! the kernel on every scrape. Stops on SIGTERM or SIGINT.
use std::sync::Arc;

use anyhow::Context as _;
use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};

use super::Shared;
use crate::metrics::{self, Format};

pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    let app = Router::new().route("/metrics", get(scrape)).with_state(shared);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await.context("serving metrics")
}

async fn scrape(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> impl IntoResponse {
    let format = Format::from_accept(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        metrics::encode_sample(&metrics::sample(&shared.targets()?)?, format)
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

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("sgctl agent: stopping");
}
