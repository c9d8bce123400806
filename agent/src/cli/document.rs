//! What `route` and `policy` share: a per-service document that operators write as TOML and
//! etcd stores as JSON at one key (`routes/<service>`, `policies/<service>`). `set` validates the
//! file before anything is written; `get` prints TOML that `set` accepts (`--json`: the stored
//! JSON); deleting an absent document succeeds.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use hostmesh_registrar::keys::Layout;

use super::{CliError, ClientArgs};
use hostmesh_config::Problems;
use hostmesh_policy::StoredPolicyError;

/// A kind of per-service document in etcd.
pub(super) trait Document: Sized {
    /// What it is called in messages and as the command: `route`, `policy`.
    const NAME: &'static str;
    /// What the file holds, for "invalid …, nothing written": `route policy`, `policy`.
    const WHAT: &'static str;
    /// What agents do while the stored value is invalid, for the error message of `get`.
    const WHILE_INVALID: &'static str;
    fn key(layout: &Layout, service: &str) -> String;
    fn parse_toml(text: &str, file: &Path) -> Result<Self, Problems>;
    fn to_toml(&self) -> String;
    fn to_json(&self) -> serde_json::Value;
    fn from_json(v: &serde_json::Value) -> Result<Self, StoredPolicyError>;
}

/// `set SERVICE FILE`, `get SERVICE`, `delete SERVICE` (the parent command says of what).
#[derive(Debug, Args)]
pub struct DocumentArgs {
    #[command(subcommand)]
    command: DocumentCommand,
}

#[derive(Debug, Subcommand)]
enum DocumentCommand {
    /// Validate FILE (TOML) and store it for SERVICE; nothing is written when it has a problem
    Set {
        /// The service name
        service: String,
        /// The file to store (TOML)
        file: PathBuf,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print what is stored for SERVICE as TOML that `set` accepts (with --json: the stored JSON)
    Get {
        /// The service name
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove what is stored for SERVICE (succeeds when there is nothing)
    Delete {
        /// The service name
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Runs one of the commands for documents of kind `D`.
pub(super) fn run<D: Document>(args: DocumentArgs) -> Result<(), CliError> {
    match args.command {
        DocumentCommand::Set {
            service,
            file,
            client,
        } => {
            // Everything is checked before the runtime starts or etcd is asked anything.
            let doc = read::<D>(&service, &file)?;
            super::block_on(set(service, doc, client))
        }
        DocumentCommand::Get { service, client } => super::block_on(get::<D>(service, client)),
        DocumentCommand::Delete { service, client } => {
            super::block_on(delete::<D>(service, client))
        }
    }
}

/// Reads and validates the file for `set`: every problem, exit 2, before etcd is asked anything.
fn read<D: Document>(service: &str, file: &Path) -> Result<D, CliError> {
    check_service(service)?;
    let text = std::fs::read_to_string(file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", file.display())))?;
    D::parse_toml(&text, file).map_err(|problems| {
        CliError::Usage(format!("invalid {}, nothing written:\n{problems}", D::WHAT))
    })
}

async fn set<D: Document>(service: String, doc: D, args: ClientArgs) -> Result<(), CliError> {
    let target = args.resolve()?;
    let key = D::key(&target.layout, &service);
    let json = doc.to_json();
    let value = serde_json::to_string(&json)
        .map_err(|e| CliError::Runtime(format!("cannot encode the {}: {e}", D::NAME)))?;
    let put_key = key.clone();
    target
        .with_etcd(
            |client| async move { client.kv_client().put(put_key, value, None).await.map(drop) },
        )
        .await?;
    if args.json {
        super::print(&serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        super::print(&format!("{} for {service} written to {key}", D::NAME));
    }
    Ok(())
}

async fn get<D: Document>(service: String, args: ClientArgs) -> Result<(), CliError> {
    check_service(&service)?;
    let target = args.resolve()?;
    let key = D::key(&target.layout, &service);
    let stored = target
        .with_etcd(|client| async move {
            let resp = client.kv_client().get(key, None).await?;
            Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
        })
        .await?;
    let Some(bytes) = stored else {
        return Err(CliError::Runtime(format!("no {} for {service}", D::NAME)));
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
    let doc = parsed
        .map_err(|e| e.to_string())
        .and_then(|v| D::from_json(&v).map_err(|e| e.to_string()))
        .map_err(|e| {
            CliError::Runtime(format!(
                "the {name} for {service} in etcd is invalid ({e}); {while_invalid} until it \
                 is replaced (`hostmesh {name} get {service} --json` shows it)",
                name = D::NAME,
                while_invalid = D::WHILE_INVALID,
            ))
        })?;
    super::print(doc.to_toml().trim_end());
    Ok(())
}

async fn delete<D: Document>(service: String, args: ClientArgs) -> Result<(), CliError> {
    check_service(&service)?;
    let target = args.resolve()?;
    let key = D::key(&target.layout, &service);
    let deleted = target
        .with_etcd(|client| async move {
            let resp = client.kv_client().delete(key, None).await?;
            Ok(resp.deleted())
        })
        .await?;
    if args.json {
        super::print(&serde_json::json!({ "deleted": deleted > 0 }).to_string());
    } else if deleted > 0 {
        super::print(&format!("{} for {service} deleted", D::NAME));
    } else {
        super::print(&format!("no {} for {service}; nothing to delete", D::NAME));
    }
    Ok(())
}

/// A service name is a DNS label: `[a-z0-9-]`, 1..=63 characters, no '-' at either end.
fn check_service(name: &str) -> Result<(), CliError> {
    hostmesh_config::names::service(name)
        .map_err(|e| CliError::Usage(format!("invalid service name {name:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names() {
        assert!(check_service("orders-v2").is_ok());
        assert!(check_service("a").is_ok());
        for bad in ["", "Orders", "-a", "a-", "a_b", "a.b", &"a".repeat(64)] {
            assert!(check_service(bad).is_err(), "{bad:?}");
        }
    }
}
