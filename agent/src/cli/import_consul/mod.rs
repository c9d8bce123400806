//! `hostmesh import consul FILE... [--out DIR] [--config FILE] [--dry-run] [--force]`: Consul
//! service definitions (JSON or HCL) as hostmesh service definitions, one `<id>.toml` per
//! instance.
//!
//! - [`source`] reads a file into definitions, [`model`] reads a definition as Consul does (keys
//!   in any case, with or without underscores), [`map`] and [`check`] decide what each field
//!   becomes, [`render`] writes the TOML, [`write`] puts it in place.
//! - Every field left behind is named on stderr with its reason ([`unmapped`]); a definition
//!   hostmesh cannot serve is refused and named. Each file passes the same check as `hostmesh
//!   check-config --service` before it is written.
//! - Exit 0 when every definition was imported, 1 when any was not, 2 for bad arguments or an
//!   unreadable `--config`.

mod check;
mod map;
mod model;
mod note;
mod object;
mod render;
mod source;
mod suggest;
#[cfg(test)]
mod tests;
mod unmapped;
mod write;

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::Value;

use super::CliError;
use map::{Protocol, Refusal};
use write::{Out, WriteError};

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    from: From,
}

#[derive(Debug, Subcommand)]
enum From {
    /// Consul service definitions (JSON or HCL) as service definitions, one file per instance
    Consul(ConsulArgs),
}

#[derive(Debug, Args)]
struct ConsulArgs {
    /// Consul files, each with a `service` or a `services` list (.json, .hcl; others are tried as
    /// JSON, then HCL)
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Where the service definitions go (default: agent.services_dir of --config)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Agent config whose agent.services_dir is the default --out (default:
    /// /etc/hostmesh/agent.toml when it exists, else /etc/hostmesh/services.d)
    #[arg(long, value_name = "FILE", conflicts_with = "out")]
    config: Option<PathBuf>,
    /// Print the files that would be written; write nothing
    #[arg(long)]
    dry_run: bool,
    /// Replace existing files
    #[arg(long)]
    force: bool,
}

/// Why one definition was not imported.
#[derive(Debug, thiserror::Error)]
enum ImportError {
    #[error("{0}")]
    Refused(#[from] Refusal),
    #[error("the definition it maps to is invalid:\n{0}")]
    Invalid(hostmesh_config::Problems),
    #[error("{0}")]
    Write(#[from] WriteError),
}

/// What a run did, for the exit code.
#[derive(Debug, Default)]
struct Tally {
    imported: usize,
    refused: usize,
    bad_files: usize,
}

pub fn run(args: ImportArgs) -> Result<(), CliError> {
    let From::Consul(args) = args.from;
    let dir = match &args.out {
        Some(dir) => dir.clone(),
        None => super::client::services_dir(args.config.as_deref())?,
    };
    let mut out = Out::open(&dir, args.force);
    let mut tally = Tally::default();
    for file in &args.files {
        import_file(file, &args, &mut out, &mut tally);
    }
    if tally.refused + tally.bad_files == 0 {
        return Ok(());
    }
    let mut failed = Vec::new();
    if tally.refused > 0 {
        failed.push(format!(
            "{} service definition{} not imported",
            tally.refused,
            plural(tally.refused)
        ));
    }
    if tally.bad_files > 0 {
        failed.push(format!(
            "{} file{} not imported",
            tally.bad_files,
            plural(tally.bad_files)
        ));
    }
    Err(CliError::Runtime(format!(
        "{} ({} imported)",
        failed.join(", "),
        tally.imported
    )))
}

fn import_file(file: &Path, args: &ConsulArgs, out: &mut Out, tally: &mut Tally) {
    let shown = file.display();
    let source = match source::read(file) {
        Ok(source) => source,
        Err(e) => {
            warn(&format!("{shown}: not imported: {e}"));
            tally.bad_files += 1;
            return;
        }
    };
    for key in &source.other {
        warn(&format!(
            "{shown}: {key}: not imported: not a service definition"
        ));
    }
    for (at, value) in &source.definitions {
        let label = label(at, value);
        match import_one(file, at, value, args, out) {
            Ok(()) => tally.imported += 1,
            Err(e) => {
                warn(&format!("{shown}: {label}: not imported: {e}"));
                tally.refused += 1;
            }
        }
    }
}

/// Maps, checks and writes (or, with `--dry-run`, prints) one definition.
fn import_one(
    file: &Path,
    at: &str,
    value: &Value,
    args: &ConsulArgs,
    out: &mut Out,
) -> Result<(), ImportError> {
    let definition = model::Definition::read(value).map_err(Refusal::from)?;
    let (service, notes) = map::map(&definition)?;
    let label = format!("{}: service {:?}", file.display(), service.name);
    let text = render::render(&service, &format!("{}, {at}", file.display()));
    let spec = hostmesh_config::parse_service(&text, &out.path(&service.id))
        .map_err(ImportError::Invalid)?;
    let path = out.claim(&spec, &label)?;
    // Named once the definition is taken: a refusal alone says what to fix first.
    for note in &notes {
        warn(&format!("{label}: {note}"));
    }
    if args.dry_run {
        super::print(&format!(
            "# {} (dry run: not written)\n{text}",
            path.display()
        ));
        return Ok(());
    }
    write::write(&path, &text, args.force)?;
    let protocol = match &service.protocol {
        Protocol::Given(protocol, field) => format!("protocol {protocol} from {field}"),
        Protocol::Default => "protocol http by default: the definition names none".to_owned(),
    };
    let check = service.check.as_ref().map_or("no check".to_owned(), |c| {
        format!("{} check", c.kind.name())
    });
    super::print(&format!(
        "{}: written (service {} port {}, {protocol}, {check})",
        path.display(),
        spec.service,
        spec.port
    ));
    Ok(())
}

/// The fuzz target's body (`fuzz/fuzz_targets/consul_import.rs`): a file's bytes as JSON, HCL and
/// neither. Asserts that a definition the mapping takes renders to a service file the agent
/// accepts, so that `ImportError::Invalid` (a refusal the operator cannot act on) never happens.
pub(crate) fn fuzz(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for extension in [Some("json"), Some("hcl"), None] {
        let Ok(source) = source::parse(text, extension) else {
            continue;
        };
        for (at, value) in &source.definitions {
            let Ok(definition) = model::Definition::read(value) else {
                continue;
            };
            let Ok((service, _notes)) = map::map(&definition) else {
                continue;
            };
            let rendered = render::render(&service, at);
            let path = Path::new("/etc/hostmesh/services.d").join(format!("{}.toml", service.id));
            if let Err(problems) = hostmesh_config::parse_service(&rendered, &path) {
                panic!("{at} maps to a file the agent refuses:\n{rendered}\n{problems}");
            }
        }
    }
}

/// How a definition is named before it is read: `service "web"`, else where it is.
fn label(at: &str, value: &Value) -> String {
    let name = value.as_object().and_then(|map| {
        map.iter()
            .find(|(key, _)| object::normalize(key) == "name")
            .and_then(|(_, v)| v.as_str())
    });
    match name {
        Some(name) => format!("service {name:?}"),
        None => at.to_owned(),
    }
}

/// A warning or a refusal on stderr, as errors are written.
fn warn(text: &str) {
    eprintln!("hostmesh: {text}");
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
