//! `hostmesh route set|get|delete SERVICE`: a service's route policy in etcd
//! (`<prefix>/v1/routes/<service>`). `set` validates the TOML file first and writes nothing when
//! it has a problem; `get` prints TOML that `set` accepts; deleting an absent route succeeds.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::{CliError, ClientArgs};
use crate::routing::RoutePolicy;

#[derive(Debug, Args)]
pub struct RouteArgs {
    #[command(subcommand)]
    command: RouteCommand,
}

#[derive(Debug, Subcommand)]
enum RouteCommand {
    /// Validate a route policy file (TOML) and store it for SERVICE
    Set {
        /// The service name
        service: String,
        /// The route policy file (TOML)
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print SERVICE's route policy as TOML (with --json: the stored JSON)
    Get {
        /// The service name
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove SERVICE's route policy (succeeds when there is none)
    Delete {
        /// The service name
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

pub fn run(args: RouteArgs) -> Result<(), CliError> {
    match args.command {
        RouteCommand::Set {
            service,
            file,
            client,
        } => {
            check_service(&service)?;
            // Everything is checked before the runtime starts or etcd is asked anything.
            let text = std::fs::read_to_string(&file)
                .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
            let policy = RoutePolicy::parse_toml(&text, &file).map_err(|problems| {
                CliError::Usage(format!(
                    "invalid route policy, nothing written:\n{problems}"
                ))
            })?;
            super::block_on(set(service, policy, client))
        }
        RouteCommand::Get { service, client } => {
            check_service(&service)?;
            super::block_on(get(service, client))
        }
        RouteCommand::Delete { service, client } => {
            check_service(&service)?;
            super::block_on(delete(service, client))
        }
    }
}

async fn set(service: String, policy: RoutePolicy, args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let key = target.layout.route(&service);
    let json = policy.to_json();
    let value = serde_json::to_string(&json)
        .map_err(|e| CliError::Runtime(format!("cannot encode the policy: {e}")))?;
    let put_key = key.clone();
    target
        .with_etcd(
            |client| async move { client.kv_client().put(put_key, value, None).await.map(drop) },
        )
        .await?;
    if args.json {
        super::print(&serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        super::print(&format!("route for {service} written to {key}"));
    }
    Ok(())
}

async fn get(service: String, args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let key = target.layout.route(&service);
    let stored = target
        .with_etcd(|client| async move {
            let resp = client.kv_client().get(key, None).await?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
        .await?;
    let Some(bytes) = stored else {
        return Err(CliError::Runtime(format!("no route for {service}")));
    };
    let parsed = serde_json::from_slice::<serde_json::Value>(&bytes);
    if args.json {
        // The stored JSON, pretty when it is JSON at all; as stored otherwise.
        let text = match &parsed {
            Ok(v) => serde_json::to_string_pretty(v).unwrap_or_default(),
            Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
        };
        super::print(&text);
        return Ok(());
    }
    let policy = parsed
        .map_err(|e| e.to_string())
        .and_then(|v| RoutePolicy::from_json(&v))
        .map_err(|e| {
            CliError::Runtime(format!(
                "the route for {service} in etcd is invalid ({e}); agents use the defaults \
                 until it is replaced (`hostmesh route get {service} --json` shows it)"
            ))
        })?;
    super::print(policy.to_toml().trim_end());
    Ok(())
}

async fn delete(service: String, args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let key = target.layout.route(&service);
    let deleted = target
        .with_etcd(|client| async move {
            let resp = client.kv_client().delete(key, None).await?;
            Ok(resp.deleted())
        })
        .await?;
    if !args.json {
        super::print(&if deleted > 0 {
            format!("route for {service} deleted")
        } else {
            format!("no route for {service}; nothing to delete")
        });
    } else {
        super::print(&serde_json::json!({ "deleted": deleted > 0 }).to_string());
    }
    Ok(())
}

/// A service name is a DNS label: `[a-z0-9-]`, 1..=63 characters, no '-' at either end.
fn check_service(name: &str) -> Result<(), CliError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "invalid service name {name:?}: 1 to 63 lowercase letters, digits and '-', \
             not starting or ending with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn service_names() {
        assert!(check_service("orders-v2").is_ok());
        assert!(check_service("a").is_ok());
        for bad in ["", "Orders", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_service(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parses_the_commands() {
        for line in [
            "hostmesh route set orders route.toml --etcd http://e:2379 --prefix /p --timeout 2s",
            "hostmesh route get orders --json",
            "hostmesh route delete orders --config /etc/hostmesh/agent.toml",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{line}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["hostmesh", "route", "set", "orders"]).is_err());
    }
}
