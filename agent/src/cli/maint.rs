//! `hostmesh maint SERVICE[/ID] on|off`: asks the local agent to take its instances of a service
//! (or one instance) out of rotation, and to put them back. The agent writes health
//! `maintenance` to etcd; every agent stops routing there at its next catalog snapshot.

use clap::{Args, ValueEnum};

use super::{CliError, ClientArgs};
use hostmesh_config::names;

#[derive(Debug, Args)]
pub struct MaintArgs {
    /// The service, or one instance of it as SERVICE/ID
    target: String,
    /// `on` takes the instances out of rotation, `off` puts them back
    switch: Switch,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Switch {
    On,
    Off,
}

pub async fn run(args: MaintArgs) -> Result<(), CliError> {
    let target = args.client.resolve()?;
    let (service, id) = match args.target.split_once('/') {
        Some((s, i)) => (s, Some(i)),
        None => (args.target.as_str(), None),
    };
    let checked = names::service(service).and_then(|()| id.map_or(Ok(()), names::instance_id));
    if let Err(e) = checked {
        return Err(CliError::Usage(format!("{:?}: {e}", args.target)));
    }
    let switch = match args.switch {
        Switch::On => "on",
        Switch::Off => "off",
    };
    let path = match id {
        Some(id) => format!("/maint/{service}/{id}/{switch}"),
        None => format!("/maint/{service}/{switch}"),
    };
    let (status, body) = target
        .admin_request(hyper::Method::POST, &path, target.timeout)
        .await
        .map_err(CliError::Runtime)?;
    let text = String::from_utf8_lossy(&body);
    match status {
        200 => {
            if args.client.json {
                super::print(text.trim_end());
            } else {
                let report: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| CliError::Runtime(format!("odd answer from the agent: {e}")))?;
                let ids = report["instances"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default();
                let state = if switch == "on" {
                    "in maintenance"
                } else {
                    "back in rotation"
                };
                super::print(&format!("{service}: {ids} {state}"));
            }
            Ok(())
        }
        400 => Err(CliError::Usage(text.trim_end().to_owned())),
        _ => Err(CliError::Runtime(text.trim_end().to_owned())),
    }
}
