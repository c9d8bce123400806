//! `hostmesh endpoints SERVICE`: HOST ADDRESS PORT HEALTH TAGS EWMA INFLIGHT BREAKER LOCKED. The
//! first columns and LOCKED come from etcd; EWMA, INFLIGHT and BREAKER from the local agent's
//! `/status` when one answers (`-` otherwise). BREAKER reads `closed`, `half-open` or `ejected
//! 4.2s` (the time left). LOCKED reads `locked` when the instance's host refuses direct
//! connections to it (`proxy.lockdown`), `-` otherwise; it is the last column so that scripts
//! reading the others by position keep working.

use serde::Serialize;

use hostmesh_registrar::catalog::fetch;

use super::{CliError, ClientArgs, table};

#[derive(Debug, Serialize)]
struct Row {
    host: String,
    id: String,
    address: Option<String>,
    port: u16,
    health: String,
    tags: Vec<String>,
    ewma_ms: Option<f64>,
    inflight: Option<u64>,
    breaker: Option<String>,
    ejected_for_ms: Option<u64>,
    locked: bool,
}

pub async fn run(service: String, args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let (layout, vip_range) = (target.layout.clone(), target.vip_range);
    let snapshot = target
        .with_etcd(|client| async move { fetch(&client, &layout, vip_range).await })
        .await?;
    let Some(svc) = snapshot.service(&service) else {
        return Err(CliError::Runtime(format!("service {service:?} not found")));
    };
    let live = target
        .admin_get("/status")
        .await
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(&body).ok());
    let rows: Vec<Row> = svc
        .instances
        .iter()
        .map(|i| {
            let agent_view = live.as_ref().and_then(|s| {
                s["services"][&service]["endpoints"]
                    .as_array()?
                    .iter()
                    .find(|e| e["host"] == i.host.as_str() && e["id"] == i.id.as_str())
                    .cloned()
            });
            let field = |name: &str| agent_view.as_ref().map(|v| v[name].clone());
            Row {
                host: i.host.clone(),
                id: i.id.clone(),
                address: i.address.map(|a| a.to_string()),
                port: i.port,
                health: i.health.to_string(),
                tags: i.tags.clone(),
                ewma_ms: field("ewma_ms").and_then(|v| v.as_f64()),
                inflight: field("inflight").and_then(|v| v.as_u64()),
                breaker: field("breaker").and_then(|v| v.as_str().map(str::to_owned)),
                ejected_for_ms: field("ejected_for_ms").and_then(|v| v.as_u64()),
                locked: i.locked,
            }
        })
        .collect();
    if args.json {
        super::print(&serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(());
    }
    let dash = || "-".to_owned();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.host.clone(),
                r.address.clone().unwrap_or_else(dash),
                r.port.to_string(),
                r.health.clone(),
                if r.tags.is_empty() {
                    dash()
                } else {
                    r.tags.join(",")
                },
                r.ewma_ms.map_or_else(dash, |v| format!("{v:.1}ms")),
                r.inflight.map_or_else(dash, |v| v.to_string()),
                breaker_cell(r.breaker.as_deref(), r.ejected_for_ms),
                if r.locked {
                    "locked".to_owned()
                } else {
                    dash()
                },
            ]
        })
        .collect();
    super::print(
        table::render(
            &[
                "HOST", "ADDRESS", "PORT", "HEALTH", "TAGS", "EWMA", "INFLIGHT", "BREAKER",
                "LOCKED",
            ],
            &cells,
        )
        .trim_end(),
    );
    Ok(())
}

/// The BREAKER cell: `ejected 4.2s` (time left), `half-open`, `closed`; `-` when no agent
/// answered or it has no breaker for the instance (one it cannot route to, e.g. not passing).
fn breaker_cell(state: Option<&str>, ejected_for_ms: Option<u64>) -> String {
    match (state, ejected_for_ms) {
        (Some("ejected"), Some(ms)) => format!("ejected {}", seconds(ms)),
        (Some(s), _) => s.to_owned(),
        (None, _) => "-".to_owned(),
    }
}

/// `4.2s` (one decimal), for times left.
pub(super) fn seconds(ms: u64) -> String {
    // Precision loss only past 2⁵³ ms.
    #[allow(clippy::cast_precision_loss)]
    let secs = ms as f64 / 1000.0;
    format!("{secs:.1}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_cell_shows_the_ejection_time_left() {
        assert_eq!(breaker_cell(Some("ejected"), Some(4213)), "ejected 4.2s");
        assert_eq!(breaker_cell(Some("half-open"), None), "half-open");
        assert_eq!(breaker_cell(Some("closed"), None), "closed");
        assert_eq!(breaker_cell(None, None), "-");
    }
}
