//! `hostmesh services`: NAME VIP PORT PROTOCOL READY, straight from etcd.

use std::collections::BTreeSet;

use serde::Serialize;

use hostmesh_registrar::catalog::{Snapshot, fetch};

use super::{CliError, ClientArgs, table};

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    vip: Option<String>,
    ports: Vec<u16>,
    protocol: &'static str,
    ready: usize,
    total: usize,
}

pub async fn run(args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let (layout, vip_range) = (target.layout.clone(), target.vip_range);
    let snapshot = target
        .with_etcd(|client| async move { fetch(&client, &layout, vip_range).await })
        .await?;
    let rows = rows(&snapshot);
    if args.json {
        super::print(&serde_json::to_string_pretty(&rows).unwrap_or_default());
        return Ok(());
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.vip.clone().unwrap_or_else(|| "-".into()),
                r.ports
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                r.protocol.to_owned(),
                format!("{}/{}", r.ready, r.total),
            ]
        })
        .collect();
    super::print(table::render(&["NAME", "VIP", "PORT", "PROTOCOL", "READY"], &cells).trim_end());
    Ok(())
}

fn rows(snapshot: &Snapshot) -> Vec<Row> {
    snapshot
        .services
        .values()
        .map(|svc| Row {
            name: svc.name.clone(),
            vip: svc.vip.map(|v| v.to_string()),
            ports: svc
                .instances
                .iter()
                .map(|i| i.port)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            protocol: svc.protocol.as_str(),
            ready: svc.passing().count(),
            total: svc.instances.len(),
        })
        .collect()
}
