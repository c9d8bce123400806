//! `hostmesh check-config --config FILE | --service FILE`: validate without running.

use std::path::PathBuf;

use clap::Args;

use super::CliError;
use hostmesh_config as config;

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct CheckConfigArgs {
    /// An agent config; its service definitions are checked too
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// One service definition (for ansible's `validate:`)
    #[arg(long, value_name = "FILE")]
    service: Option<PathBuf>,
}

pub fn run(args: CheckConfigArgs) -> Result<(), CliError> {
    let invalid = |p: config::Problems| CliError::Usage(format!("invalid configuration:\n{p}"));
    if let Some(path) = args.config {
        // The TLS files are checked as the agent's start checks them.
        let (_, specs, _) = hostmesh_tls::TlsStore::load_config(&path).map_err(invalid)?;
        super::print(&format!(
            "{}: ok ({} service definition{})",
            path.display(),
            specs.len(),
            if specs.len() == 1 { "" } else { "s" }
        ));
    } else if let Some(path) = args.service {
        let spec = config::load_service(&path).map_err(invalid)?;
        super::print(&format!(
            "{}: ok (service {} port {})",
            path.display(),
            spec.service,
            spec.port
        ));
    }
    Ok(())
}
