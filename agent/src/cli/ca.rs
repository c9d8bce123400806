//! `hostmesh ca init|issue`: a mesh CA on disk and host certificates signed by it.
//!
//! - `init --dir DIR [--trust-domain D]` writes `DIR/ca.pem` and `DIR/ca.key` (0600). The trust
//!   domain is stored in the CA certificate itself (its URI SAN `spiffe://<D>`), so `issue`
//!   needs nothing else. An existing CA is never overwritten.
//! - `issue --dir DIR --host NAME --out OUT [--days N] [--force]` writes `OUT/host.pem`,
//!   `OUT/host.key` (0640) and `OUT/ca.pem`. Existing files are replaced only with `--force`,
//!   each by an atomic rename, so a running agent never reads a half-written file.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};

use super::CliError;
use hostmesh_tls::identity;
use hostmesh_tls::issue::{self, Ca};

const DEFAULT_TRUST_DOMAIN: &str = "hostmesh.local";
/// Host certificates live at most ten years (the CA's own lifetime).
const MAX_DAYS: u64 = 3650;

#[derive(Debug, Args)]
pub struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create a mesh CA: DIR/ca.pem and DIR/ca.key (0600); never overwrites an existing CA
    Init {
        /// Where the CA files go (created if missing)
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The SPIFFE trust domain of the mesh (tls.trust_domain in agent configs)
        #[arg(long, value_name = "D", default_value = DEFAULT_TRUST_DOMAIN)]
        trust_domain: String,
    },
    /// Issue a host certificate: OUT/host.pem, OUT/host.key (0640) and OUT/ca.pem
    Issue {
        /// The CA directory made by `ca init`
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        /// The host's name (agent.host on that host)
        #[arg(long, value_name = "NAME")]
        host: String,
        /// Where the host's files go (created if missing)
        #[arg(long, value_name = "OUT")]
        out: PathBuf,
        /// Days the certificate is valid
        #[arg(long, value_name = "N", default_value_t = 365)]
        days: u64,
        /// Replace existing files in OUT
        #[arg(long)]
        force: bool,
    },
}

pub fn run(args: CaArgs) -> Result<(), CliError> {
    match args.command {
        CaCommand::Init { dir, trust_domain } => init(&dir, &trust_domain),
        CaCommand::Issue {
            dir,
            host,
            out,
            days,
            force,
        } => issue(&dir, &host, &out, days, force),
    }
}

fn init(dir: &Path, trust_domain: &str) -> Result<(), CliError> {
    identity::check_trust_domain(trust_domain).map_err(|e| CliError::Usage(e.to_string()))?;
    let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
    for existing in [&key_path, &cert_path] {
        if existing.exists() {
            return Err(CliError::Usage(format!(
                "{} already exists; refusing to overwrite a CA (every host certificate depends on it). \
                 Remove it first if you really mean to start a new CA.",
                existing.display()
            )));
        }
    }
    create_dir(dir, 0o700)?;
    let ca = issue::new_ca(trust_domain).map_err(issue_error)?;
    // The key first, created exclusively: two racing inits cannot both write one.
    write_new(&key_path, ca.key_pem.as_bytes(), 0o600)?;
    write_replacing(&cert_path, ca.cert_pem.as_bytes(), 0o644)?;
    super::print(&format!(
        "created a mesh CA for trust domain {trust_domain}: {} and {} (keep ca.key secret and off the hosts)",
        cert_path.display(),
        key_path.display()
    ));
    Ok(())
}

fn issue(dir: &Path, host: &str, out: &Path, days: u64, force: bool) -> Result<(), CliError> {
    identity::check_host(host).map_err(|e| CliError::Usage(e.to_string()))?;
    if days == 0 || days > MAX_DAYS {
        return Err(CliError::Usage(format!(
            "--days {days}: must be 1..={MAX_DAYS}"
        )));
    }
    let read = |name: &str| {
        let path = dir.join(name);
        fs::read_to_string(&path).map_err(|e| {
            CliError::Runtime(format!(
                "cannot read {}: {e} (make a CA with `hostmesh ca init --dir {}`)",
                path.display(),
                dir.display()
            ))
        })
    };
    let (ca_pem, ca_key) = (read("ca.pem")?, read("ca.key")?);
    let ca = Ca::from_pem(&ca_pem, &ca_key)
        .map_err(|e| CliError::Usage(format!("{}: {e}", dir.display())))?;
    let (cert_path, key_path, ca_out) = (
        out.join("host.pem"),
        out.join("host.key"),
        out.join("ca.pem"),
    );
    if !force {
        for existing in [&cert_path, &key_path] {
            if existing.exists() {
                return Err(CliError::Usage(format!(
                    "{} already exists; pass --force to replace it",
                    existing.display()
                )));
            }
        }
        // OUT may be the CA directory itself: an identical ca.pem is not an overwrite.
        if fs::read_to_string(&ca_out).is_ok_and(|existing| existing != ca_pem) {
            return Err(CliError::Usage(format!(
                "{} already exists with a different CA; pass --force to replace it",
                ca_out.display()
            )));
        }
    }
    let issued = ca
        .issue(host, Duration::from_secs(days * 86_400))
        .map_err(issue_error)?;
    create_dir(out, 0o755)?;
    write_replacing(&key_path, issued.key_pem.as_bytes(), 0o640)?;
    write_replacing(&cert_path, issued.cert_pem.as_bytes(), 0o644)?;
    write_replacing(&ca_out, ca_pem.as_bytes(), 0o644)?;
    super::print(&format!(
        "issued spiffe://{}/host/{host}, valid for {days} days: {}, {}, {}",
        ca.trust_domain(),
        cert_path.display(),
        key_path.display(),
        ca_out.display()
    ));
    Ok(())
}

fn create_dir(dir: &Path, mode: u32) -> Result<(), CliError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(|e| CliError::Runtime(format!("cannot create {}: {e}", dir.display())))
}

/// Creates `path` with `mode`, failing if it exists.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), CliError> {
    let fail =
        |e: std::io::Error| CliError::Runtime(format!("cannot write {}: {e}", path.display()));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(fail)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(fail)
}

/// Writes `path` with `mode` through a temporary file and a rename: readers see the old file or
/// the new one, never a mix, and the mode holds from the first byte (the umask cannot widen it).
fn write_replacing(path: &Path, data: &[u8], mode: u32) -> Result<(), CliError> {
    let fail =
        |e: std::io::Error| CliError::Runtime(format!("cannot write {}: {e}", path.display()));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, data, mode)?;
    // The umask applies to `open`'s mode; set it exactly.
    fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(mode)).map_err(fail)?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        fail(e)
    })
}

/// A name breaking the identity rules is the operator's input (exit 2); rcgen failing is not.
fn issue_error(e: issue::IssueError) -> CliError {
    match e {
        issue::IssueError::Identity(_) => CliError::Usage(e.to_string()),
        issue::IssueError::Rcgen(_) => CliError::Runtime(e.to_string()),
    }
}
