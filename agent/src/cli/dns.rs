//! `hostmesh dns enable|disable`: make the host's resolver forward the mesh domain to the DNS
//! shim, or stop it.
//!
//! - `enable` finds the resolver the host uses (systemd-resolved, dnsmasq or unbound: the one
//!   running, or in a `--root` tree the one installed; `--resolver` overrides), reads `[dns]
//!   listen`, `domain` and `consul` from the agent config, and writes one drop-in of ours that
//!   forwards only the mesh domain (and `consul` with Consul names on). `/etc/resolv.conf` is
//!   never touched.
//! - `disable` removes every drop-in of ours, whichever resolver it belongs to (no config needed,
//!   so package removal can call it).
//! - Both are idempotent: an unchanged file is not rewritten and no resolver is reloaded.
//! - On the live system (no `--root`) the changed resolver is reloaded; in a tree nothing runs.
//! - Loop guard: `enable` refuses when the resolver already sends every name (not only the mesh
//!   domain) to the shim while the shim sends the names it does not own back to that resolver.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand};

use super::CliError;
use hostmesh_config::{AgentConfig, CONSUL_DOMAIN, DEFAULT_CONFIG_PATH, Upstream};

mod resolver;
#[cfg(test)]
mod tests;

pub use resolver::{Resolver, choose, loop_problem, resolv_conf_servers};

#[derive(Debug, Args)]
pub struct DnsArgs {
    #[command(subcommand)]
    action: Action,
    /// Act inside this tree (an image or a chroot) instead of the live system: paths are taken
    /// under DIR and no resolver is reloaded
    #[arg(long, global = true, value_name = "DIR", env = "HOSTMESH_DNS_ROOT")]
    root: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Forward the mesh domain from the host resolver to the shim
    Enable {
        /// The agent config whose [dns] listen, domain and consul are used [default: /etc/hostmesh/agent.toml, under --root]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The resolver to configure, instead of detecting it
        #[arg(long, value_enum)]
        resolver: Option<Resolver>,
    },
    /// Stop forwarding: remove every drop-in `enable` wrote
    Disable,
}

pub fn run(args: DnsArgs) -> Result<(), CliError> {
    // Without --root this is the live system, unless it is a chroot (an image build, ansible's
    // chroot connection) or runs without systemd: then nothing is running to ask or reload,
    // and the resolver is chosen from what is installed, as in a tree.
    let live = args.root.is_none() && !in_chroot() && Path::new("/run/systemd/system").is_dir();
    if args.root.is_none() && !live {
        eprintln!("hostmesh: no running systemd here (a chroot?): no resolver will be reloaded");
    }
    let root = args.root.unwrap_or_else(|| PathBuf::from("/"));
    if !root.is_dir() {
        return Err(CliError::Usage(format!(
            "--root {}: not a directory",
            root.display()
        )));
    }
    match args.action {
        Action::Enable { config, resolver } => enable(&root, live, config, resolver),
        Action::Disable => disable(&root, live),
    }
}

fn enable(
    root: &Path,
    live: bool,
    config: Option<PathBuf>,
    resolver: Option<Resolver>,
) -> Result<(), CliError> {
    let config_path =
        config.unwrap_or_else(|| root.join(DEFAULT_CONFIG_PATH.trim_start_matches('/')));
    let config = AgentConfig::load(&config_path, hostmesh_config::process_env())
        .map_err(|p| CliError::Usage(format!("invalid configuration:\n{p}")))?;
    let shim = config.dns.listen;
    let mut domains = vec![config.dns.domain.trim_end_matches('.')];
    if config.dns.consul {
        domains.push(CONSUL_DOMAIN);
    }
    let domain = domains.join(", ");

    let resolver = match resolver {
        Some(r) => r,
        None => {
            let installed: Vec<Resolver> = Resolver::ALL
                .into_iter()
                .filter(|r| r.installed(root))
                .collect();
            let running = live.then(|| {
                Resolver::ALL
                    .into_iter()
                    .filter(|r| systemctl(&["is-active", "--quiet", r.unit()]).is_ok())
                    .collect::<Vec<_>>()
            });
            choose(&installed, running.as_deref()).map_err(CliError::Runtime)?
        }
    };

    let upstreams = shim_upstreams(root, &config.dns.upstream);
    let texts: Vec<String> = resolver
        .config_files(root)
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .collect();
    if let Some(problem) = loop_problem(resolver, shim, &upstreams, &texts) {
        return Err(CliError::Usage(problem));
    }

    let path = resolver.drop_in(root);
    let text = resolver.drop_in_text(shim, &domains);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        super::print(&format!(
            "already enabled: {resolver} forwards {domain} to {shim} ({})",
            path.display()
        ));
        return Ok(());
    }
    write_atomically(&path, &text)?;
    super::print(&format!(
        "enabled: {resolver} forwards {domain} to {shim} ({})",
        path.display()
    ));
    if live {
        reload(resolver)?;
    }
    Ok(())
}

fn disable(root: &Path, live: bool) -> Result<(), CliError> {
    let mut removed = false;
    for resolver in Resolver::ALL {
        for path in resolver.drop_ins(root) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    super::print(&format!("disabled: removed {}", path.display()));
                    removed = true;
                    if live && systemctl(&["is-active", "--quiet", resolver.unit()]).is_ok() {
                        reload(resolver)?;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(CliError::Runtime(format!(
                        "cannot remove {}: {e}",
                        path.display()
                    )));
                }
            }
        }
    }
    if !removed {
        super::print("already disabled: no resolver drop-in of hostmesh found");
    }
    Ok(())
}

/// Whether `/` is not the root of PID 1 (systemd's `running_in_chroot`). A chroot often has no
/// /proc at all, which counts as one too.
fn in_chroot() -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/"), std::fs::metadata("/proc/1/root")) {
        (Ok(ours), Ok(init)) => (ours.dev(), ours.ino()) != (init.dev(), init.ino()),
        (_, Err(e)) => e.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// The addresses the shim forwards non-mesh names to, reading resolv.conf inside the tree.
fn shim_upstreams(root: &Path, upstream: &[Upstream]) -> Vec<SocketAddr> {
    upstream
        .iter()
        .flat_map(|u| match u {
            Upstream::Addr(a) => vec![*a],
            Upstream::System => std::fs::read_to_string(root.join("etc/resolv.conf"))
                .map(|t| resolv_conf_servers(&t))
                .unwrap_or_default(),
        })
        .collect()
}

/// Writes `path` by rename, so a resolver reloading at the same moment never reads half a file.
fn write_atomically(path: &Path, text: &str) -> Result<(), CliError> {
    let fail =
        |e: std::io::Error| CliError::Runtime(format!("cannot write {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    // Only resolved's drop-in directory may be missing: resolved reads it when it appears.
    std::fs::create_dir_all(dir).map_err(fail)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".hostmesh.")
        .tempfile_in(dir)
        .map_err(fail)?;
    tmp.write_all(text.as_bytes()).map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    // Resolvers read their config as their own user (unbound, dnsmasq): world-readable.
    use std::os::unix::fs::PermissionsExt;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Makes the live resolver read its config again. dnsmasq re-reads its files only on a restart.
/// unbound is restarted too: Debian's unit reloads with `/bin/kill`, which a minimal install
/// (no procps) lacks, and its HUP empties the cache just as a restart does.
fn reload(resolver: Resolver) -> Result<(), CliError> {
    let action = match resolver {
        Resolver::Dnsmasq | Resolver::Unbound => "try-restart",
        Resolver::Resolved => "try-reload-or-restart",
    };
    systemctl(&[action, resolver.unit()]).map_err(|e| {
        CliError::Runtime(format!(
            "the drop-in is written, but reloading {resolver} failed: {e}; run `systemctl {action} {}`",
            resolver.unit()
        ))
    })
}

fn systemctl(args: &[&str]) -> Result<(), String> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .map_err(|e| format!("systemctl: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("systemctl {} exited with {status}", args.join(" ")))
    }
}
