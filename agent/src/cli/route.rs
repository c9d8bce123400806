//! `hostmesh route set|get|delete SERVICE`: a service's route policy in etcd
//! (`<prefix>/v1/routes/<service>`), through the commands every per-service document shares
//! (`document`).

use std::path::Path;

use hostmesh_registrar::keys::Layout;

use super::CliError;
use super::document::{self, Document, DocumentArgs};
use hostmesh_config::Problems;
use hostmesh_policy::StoredPolicyError;
use hostmesh_policy::route::RoutePolicy;

pub type RouteArgs = DocumentArgs;

pub fn run(args: RouteArgs) -> Result<(), CliError> {
    document::run::<RoutePolicy>(args)
}

impl Document for RoutePolicy {
    const NAME: &'static str = "route";
    const WHAT: &'static str = "route policy";
    const WHILE_INVALID: &'static str = "agents use the defaults";

    fn key(layout: &Layout, service: &str) -> String {
        layout.route(service)
    }
    fn parse_toml(text: &str, file: &Path) -> Result<Self, Problems> {
        RoutePolicy::parse_toml(text, file)
    }
    fn to_toml(&self) -> String {
        RoutePolicy::to_toml(self)
    }
    fn to_json(&self) -> serde_json::Value {
        RoutePolicy::to_json(self)
    }
    fn from_json(v: &serde_json::Value) -> Result<Self, StoredPolicyError> {
        RoutePolicy::from_json(v)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

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
