//! `hostmesh endpoints SERVICE`: HOST ADDRESS PORT HEALTH TAGS EWMA INFLIGHT BREAKER. The first
//! columns come from etcd; the last three from the local agent's `/status` when one answers.

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
}

pub async fn run(service: String, args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let layout = target.layout.clone();
    let snapshot = target
        .with_etcd(|client| async move { fetch(&client, &layout).await })
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
                r.breaker.clone().unwrap_or_else(dash),
            ]
        })
        .collect();
    super::print(
        table::render(
            &[
                "HOST", "ADDRESS", "PORT", "HEALTH", "TAGS", "EWMA", "INFLIGHT", "BREAKER",
            ],
            &cells,
        )
        .trim_end(),
    );
    Ok(())
}
