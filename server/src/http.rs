//! HTTP/1.1 endpoints served on the client URLs next to gRPC, as etcd does: `/health` and
//! `/version` (the JSON bodies etcd returns).

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::grpc::Shared;
use crate::version::{ETCD_API_VERSION, ETCD_CLUSTER_VERSION};

pub fn router(shared: Shared) -> Router {
    Router::new()
        .route(
            "/health",
            get(move || {
                let shared = shared.clone();
                async move { health(&shared) }
            }),
        )
        .route("/version", get(version))
}

fn json(status: StatusCode, body: String) -> impl IntoResponse {
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}

fn health(shared: &Shared) -> impl IntoResponse {
    match shared.store.current_revision() {
        Ok(_) => json(StatusCode::OK, r#"{"health":"true","reason":""}"#.to_string()),
        Err(e) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"health":"false","reason":"{}"}}"#, e.to_string().replace('"', "'")),
        ),
    }
}

async fn version() -> impl IntoResponse {
    json(
        StatusCode::OK,
        format!(r#"{{"etcdserver":"{ETCD_API_VERSION}","etcdcluster":"{ETCD_CLUSTER_VERSION}"}}"#),
    )
}
