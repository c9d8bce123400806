//! `POST /maint/{service}/{on|off}` and `POST /maint/{service}/{id}/{on|off}`: the operator's
//! maintenance switch for this host's instances (`hostmesh maint`). It changes state, so it is
//! a POST and answers only callers on loopback: the admin port may listen beyond loopback for a
//! Prometheus on another host, and scraping must never be able to take instances out.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AdminState;

#[derive(Debug, Serialize)]
pub struct MaintReport {
    pub service: String,
    pub maintenance: bool,
    pub instances: Vec<String>,
}

pub async fn service(
    state: State<Arc<AdminState>>,
    peer: ConnectInfo<SocketAddr>,
    Path((service, switch)): Path<(String, String)>,
) -> Response {
    apply(state, peer, service, None, &switch)
}

pub async fn instance(
    state: State<Arc<AdminState>>,
    peer: ConnectInfo<SocketAddr>,
    Path((service, id, switch)): Path<(String, String, String)>,
) -> Response {
    apply(state, peer, service, Some(id), &switch)
}

fn apply(
    State(state): State<Arc<AdminState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    service: String,
    id: Option<String>,
    switch: &str,
) -> Response {
    if !peer.ip().is_loopback() {
        return (
            StatusCode::FORBIDDEN,
            "maintenance can only be switched from this host (loopback)\n",
        )
            .into_response();
    }
    let on = match switch {
        "on" => true,
        "off" => false,
        other => {
            return (
                StatusCode::BAD_REQUEST,
                format!("expected on or off, not {other:?}\n"),
            )
                .into_response();
        }
    };
    let ids: Vec<String> = match &id {
        Some(id) if state.local.get(&service, id).is_some() => vec![id.clone()],
        Some(_) => Vec::new(),
        None => state.local.ids(&service),
    };
    if ids.is_empty() {
        let what = id.map_or_else(|| service.clone(), |id| format!("{service}/{id}"));
        return (
            StatusCode::NOT_FOUND,
            format!("no local instance {what} on this host\n"),
        )
            .into_response();
    }
    let pairs: Vec<(String, String)> = ids.iter().map(|i| (service.clone(), i.clone())).collect();
    if let Err(e) = state.maintenance.set(&pairs, on) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("could not save the maintenance state: {e}\n"),
        )
            .into_response();
    }
    tracing::info!(service, instances = ?ids, on, "maintenance switched");
    Json(MaintReport {
        service,
        maintenance: on,
        instances: ids,
    })
    .into_response()
}
