//! The `hostmesh` command line: argument parsing and dispatch. Each command lives in its own file.
//!
//! Exit codes (docs/reference/cli.md): 0 success, 1 runtime failure (etcd unreachable, not found), 2 usage or
//! invalid input. Errors go to stderr.

mod ca;
mod check_config;
mod client;
mod dev;
mod dns;
mod document;
mod endpoints;
mod explain;
pub(crate) mod import_consul;
mod maint;
mod policy;
mod route;
mod services;
mod table;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hostmesh_config::DEFAULT_CONFIG_PATH;

pub use client::ClientArgs;

#[derive(Debug, Parser)]
#[command(
    name = "hostmesh",
    version,
    about = "A service mesh for VMs and bare metal"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the per-host agent in the foreground
    Agent {
        /// The agent config
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// One-command local mesh: a private etcd, an agent and two demo services
    Dev(dev::DevArgs),
    /// Validate an agent config (and its service definitions) or one service definition
    CheckConfig(check_config::CheckConfigArgs),
    /// List services: NAME VIP PORT PROTOCOL READY
    Services(ClientArgs),
    /// List a service's endpoints: HOST ADDRESS PORT HEALTH TAGS EWMA INFLIGHT BREAKER
    Endpoints {
        /// The service name
        service: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask the local agent how it would route a request now: rule, deadline, budget, candidates, pick
    Explain(explain::ExplainArgs),
    /// Manage a service's route policy in etcd: set SERVICE FILE, get SERVICE, delete SERVICE
    Route(route::RouteArgs),
    /// Mesh CA and host certificates: init --dir DIR, issue --dir DIR --host NAME --out OUT
    Ca(ca::CaArgs),
    /// Take this host's instances of a service (or SERVICE/ID) out of rotation and back: on|off
    Maint(maint::MaintArgs),
    /// Manage who may call a service (in etcd): set SERVICE FILE, get SERVICE, delete SERVICE
    Policy(policy::PolicyArgs),
    /// Forward the mesh domain from the host resolver (resolved, dnsmasq, unbound) to the shim: enable|disable
    Dns(dns::DnsArgs),
    /// Service definitions from another registry: consul FILE... [--out DIR] [--dry-run] [--force]
    Import(import_consul::ImportArgs),
}

/// How a command failed, and so which exit code it gets.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments or invalid input: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command could not do its job (etcd unreachable, not found): exit 1.
    #[error("{0}")]
    Runtime(String),
}

impl CliError {
    fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Runtime(_) => ExitCode::from(1),
        }
    }
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    // ring is the one crypto provider in the tree (docs/ARCHITECTURE.md, "TLS"); installing it explicitly means
    // a dependency that ever pulls in a second provider cannot make TLS setup panic.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Agent { config } => agent(config),
        Command::Dev(args) => dev::run(args),
        Command::CheckConfig(args) => check_config::run(args),
        Command::Services(args) => block_on(services::run(args)),
        Command::Endpoints { service, client } => block_on(endpoints::run(service, client)),
        Command::Explain(args) => block_on(explain::run(args)),
        Command::Route(args) => route::run(args),
        Command::Ca(args) => ca::run(args),
        Command::Maint(args) => block_on(maint::run(args)),
        Command::Policy(args) => policy::run(args),
        Command::Dns(args) => dns::run(args),
        Command::Import(args) => import_consul::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hostmesh: {e}");
            e.exit_code()
        }
    }
}

fn agent(config_path: PathBuf) -> Result<(), CliError> {
    let invalid = |problems| CliError::Usage(format!("invalid configuration:\n{problems}"));
    let (config, specs, tls) =
        hostmesh_tls::TlsStore::load_config(&config_path).map_err(invalid)?;
    crate::telemetry::init(config.log.format, &config.log.level);
    block_on(async move {
        crate::run::run(config_path, config, specs, tls.map(std::sync::Arc::new))
            .await
            .map_err(|e| CliError::Runtime(e.to_string()))
    })
}

fn block_on<F: std::future::Future<Output = Result<(), CliError>>>(f: F) -> Result<(), CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Runtime(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(f)
}

/// Writes a command's result to stdout (the one place commands print their output).
#[allow(
    clippy::print_stdout,
    reason = "printing results is what commands are for"
)]
fn print(text: &str) {
    println!("{text}");
}
