//! HTTP/1.1 endpoints served on the client URLs next to gRPC, as etcd does: `/health` and
//! `/version` (the JSON bodies etcd returns), etcd 3.5.11's `/livez` and `/readyz`, and
//! Prometheus' `/metrics`.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::state::Shared;
use crate::version::{ETCD_API_VERSION, ETCD_CLUSTER_VERSION};

pub fn router(shared: Shared) -> Router {
    let (live, ready, metrics) = (shared.clone(), shared.clone(), shared);
    Router::new()
        .route(
            "/livez",
            get(move || {
                let shared = live.clone();
                async move { probe("livez", check_serializable(&shared)) }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let shared = ready.clone();
                async move {
                    let checks = match check_serializable(&shared) {
                        Err(e) => Err(e),
                        Ok(()) => linearizable_read(&shared).await.map_err(|e| ("linearizable_read", e)),
                    };
                    probe("readyz", checks)
                }
            }),
        )
        .route("/version", get(version))
        .merge(metrics_router(metrics))
}

/// `/metrics`, and `/health` beside it as on etcd's `--listen-metrics-urls`.
pub fn metrics_router(shared: Shared) -> Router {
    let health_shared = shared.clone();
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let shared = shared.clone();
                async move {
                    // Reading RocksDB properties and the index lock: off the async threads.
                    match tokio::task::spawn_blocking(move || shared.scrape_metrics()).await {
                        Ok(text) => {
                            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text)
                                .into_response()
                        }
                        // A scrape that panicked: no figures rather than empty ones.
                        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot gather metrics: {e}"))
                            .into_response(),
                    }
                }
            }),
        )
        .route(
            "/health",
            get(move || {
                let shared = health_shared.clone();
                async move { health(&shared).await }
            }),
        )
}

/// A ReadIndex bounded by two election timeouts: a probe answers quickly, unlike a client
/// request that may wait out an election.
async fn linearizable_read(shared: &Shared) -> Result<(), String> {
    if shared.node.leader().is_none() {
        return Err(crate::error::ServerError::NoLeader.to_string());
    }
    let limit = 2 * shared.config.election_timeout;
    match tokio::time::timeout(limit, shared.node.linearizable_barrier()).await {
        Err(_) => Err(crate::error::ServerError::Timeout.to_string()),
        Ok(result) => result.map_err(|e| e.to_string()),
    }
}

fn check_serializable(shared: &Shared) -> Result<(), (&'static str, String)> {
    shared.store.current_revision().map(|_| ()).map_err(|e| ("serializable_read", e.to_string()))
}

/// The Kubernetes-style probe answer etcd gives: "ok", or the failed check and why.
fn probe(name: &str, result: Result<(), (&'static str, String)>) -> impl IntoResponse {
    match result {
        Ok(()) => (StatusCode::OK, "ok".to_string()),
        Err((check, why)) => {
            (StatusCode::SERVICE_UNAVAILABLE, format!("[-]{check} failed: {why}\n{name} check failed"))
        }
    }
}

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

/// etcd's `/health`: a leader, then a read through raft (a linearizable one).
async fn health(shared: &Shared) -> impl IntoResponse {
    let unhealthy = |reason: &str| {
        json(StatusCode::SERVICE_UNAVAILABLE, format!(r#"{{"health":"false","reason":"{reason}"}}"#))
    };
    if let Some(alarm) = shared.applier.alarms().first() {
        let name = rkv_proto::etcdserverpb::AlarmType::try_from(alarm.alarm).map(|t| t.as_str_name());
        return unhealthy(&format!("ALARM {}", name.unwrap_or("NONE")));
    }
    if shared.node.leader().is_none() {
        return unhealthy("RAFT NO LEADER");
    }
    if shared.store.current_revision().is_err() || linearizable_read(shared).await.is_err() {
        return unhealthy("QGET ERROR");
    }
    json(StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string())
}

async fn version() -> impl IntoResponse {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{ETCD_API_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#),
    )
}
