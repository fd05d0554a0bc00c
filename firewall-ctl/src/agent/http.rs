//! The metrics endpoint: `GET /metrics`, the OpenMetrics text of
//! [`crate::metrics`], read from the kernel on every scrape. Stops on
//! SIGTERM or SIGINT.
use std::sync::Arc;

use anyhow::Context as _;
use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};

use super::Shared;
use crate::metrics;

pub async fn serve(listener: std::net::TcpListener, shared: Arc<Shared>) -> anyhow::Result<()> {
    let app = Router::new().route("/metrics", get(scrape)).with_state(shared);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, app).with_graceful_shutdown(stop_signal()).await.context("serving metrics")
}

async fn scrape(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        metrics::encode_sample(&metrics::sample(&shared.targets()?)?)
    })
    .await;
    match text {
        Ok(Ok(text)) => (StatusCode::OK, [("content-type", metrics::CONTENT_TYPE)], text),
        Ok(Err(e)) => {
            (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], format!("sgctl agent: {e:#}\n"))
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [("content-type", "text/plain")], format!("sgctl agent: {e}\n")),
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
