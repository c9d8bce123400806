//! `hostmesh policy set|get|delete SERVICE`: who may call a service, in etcd
//! (`<prefix>/v1/policies/<service>`), through the commands every per-service document shares
//! (`document`).

use std::path::Path;

use hostmesh_registrar::keys::Layout;

use super::CliError;
use super::document::{self, Document, DocumentArgs};
use hostmesh_config::Problems;
use hostmesh_policy::StoredPolicyError;
use hostmesh_policy::access::AccessPolicy;

pub type PolicyArgs = DocumentArgs;

pub fn run(args: PolicyArgs) -> Result<(), CliError> {
    document::run::<AccessPolicy>(args)
}

impl Document for AccessPolicy {
    const NAME: &'static str = "policy";
    const WHAT: &'static str = "policy";
    const WHILE_INVALID: &'static str = "agents deny every caller of the service";

    fn key(layout: &Layout, service: &str) -> String {
        layout.policy(service)
    }
    fn parse_toml(text: &str, file: &Path) -> Result<Self, Problems> {
        AccessPolicy::parse_toml(text, file)
    }
    fn to_toml(&self) -> String {
        AccessPolicy::to_toml(self)
    }
    fn to_json(&self) -> serde_json::Value {
        AccessPolicy::to_json(self)
    }
    fn from_json(v: &serde_json::Value) -> Result<Self, StoredPolicyError> {
        AccessPolicy::from_json(v)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    #[test]
    fn parses_the_commands() {
        for line in [
            "hostmesh policy set orders policy.toml --etcd http://e:2379 --prefix /p",
            "hostmesh policy get orders --json",
            "hostmesh policy delete orders --config /etc/hostmesh/agent.toml",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            if let Err(e) = Cli::try_parse_from(args) {
                panic!("{line}: {e}");
            }
        }
        assert!(Cli::try_parse_from(["hostmesh", "policy", "set", "orders"]).is_err());
    }
}
