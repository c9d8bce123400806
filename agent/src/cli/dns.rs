//! `hostmesh dns enable|disable`: make the host's resolver forward the mesh domain to the DNS
//! shim, or stop it.
//!
//! - `enable` finds the resolver the host uses (systemd-resolved, dnsmasq or unbound: the one
//!   running, or in a `--root` tree the one installed; `--resolver` overrides), reads `[dns]
//!   listen` and `domain` from the agent config, and writes one drop-in of ours that forwards
//!   only the mesh domain. `/etc/resolv.conf` is never touched.
//! - `disable` removes every drop-in of ours, whichever resolver it belongs to (no config needed,
//!   so package removal can call it).
//! - Both are idempotent: an unchanged file is not rewritten and no resolver is reloaded.
//! - On the live system (no `--root`) the changed resolver is reloaded; in a tree nothing runs.
//! - Loop guard: `enable` refuses when the resolver already sends every name (not only the mesh
//!   domain) to the shim while the shim sends the names it does not own back to that resolver.

use std::fmt;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{Args, Subcommand, ValueEnum};

use super::CliError;
use crate::config::{AgentConfig, DEFAULT_CONFIG_PATH, Upstream};

#[cfg(test)]
mod tests;

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
        /// The agent config whose [dns] listen and domain are used [default: /etc/hostmesh/agent.toml, under --root]
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// The resolver to configure, instead of detecting it
        #[arg(long, value_enum)]
        resolver: Option<Resolver>,
    },
    /// Stop forwarding: remove every drop-in `enable` wrote
    Disable,
}

/// The resolvers `enable` knows how to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Resolver {
    Resolved,
    Dnsmasq,
    Unbound,
}

impl fmt::Display for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.unit())
    }
}

/// Where the drop-ins go, relative to the root. unbound's include directory differs between
/// Debian (`unbound.conf.d`) and Fedora/EL (`conf.d`).
const RESOLVED_DIR: &str = "etc/systemd/resolved.conf.d";
const DNSMASQ_DIR: &str = "etc/dnsmasq.d";
const UNBOUND_DIRS: [&str; 2] = ["etc/unbound/unbound.conf.d", "etc/unbound/conf.d"];
const FILE_NAME: &str = "hostmesh.conf";
/// Where systemd-resolved's stub listens (its own address as the shim's upstream).
const RESOLVED_STUBS: [Ipv4Addr; 2] = [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(127, 0, 0, 54)];

impl Resolver {
    const ALL: [Resolver; 3] = [Resolver::Resolved, Resolver::Dnsmasq, Resolver::Unbound];

    /// The systemd unit that runs it.
    fn unit(self) -> &'static str {
        match self {
            Resolver::Resolved => "systemd-resolved",
            Resolver::Dnsmasq => "dnsmasq",
            Resolver::Unbound => "unbound",
        }
    }

    /// Whether its program is installed in the tree.
    fn installed(self, root: &Path) -> bool {
        let any = |paths: &[&str]| paths.iter().any(|p| root.join(p).exists());
        match self {
            Resolver::Resolved => any(&[
                "usr/lib/systemd/systemd-resolved",
                "lib/systemd/systemd-resolved",
            ]),
            // dnsmasq-base alone (NetworkManager's, libvirt's) reads no /etc/dnsmasq.d.
            Resolver::Dnsmasq => any(&["usr/sbin/dnsmasq"]) && root.join(DNSMASQ_DIR).is_dir(),
            Resolver::Unbound => {
                any(&["usr/sbin/unbound"]) && UNBOUND_DIRS.iter().any(|d| root.join(d).is_dir())
            }
        }
    }

    /// The drop-in `enable` writes for this resolver in the tree.
    fn drop_in(self, root: &Path) -> PathBuf {
        let dir = match self {
            Resolver::Resolved => RESOLVED_DIR,
            Resolver::Dnsmasq => DNSMASQ_DIR,
            Resolver::Unbound => UNBOUND_DIRS
                .iter()
                .copied()
                .find(|d| root.join(d).is_dir())
                .unwrap_or(UNBOUND_DIRS[0]),
        };
        root.join(dir).join(FILE_NAME)
    }

    /// Every drop-in path `enable` may have written for this resolver.
    fn drop_ins(self, root: &Path) -> Vec<PathBuf> {
        match self {
            Resolver::Resolved => vec![root.join(RESOLVED_DIR).join(FILE_NAME)],
            Resolver::Dnsmasq => vec![root.join(DNSMASQ_DIR).join(FILE_NAME)],
            Resolver::Unbound => UNBOUND_DIRS
                .iter()
                .map(|d| root.join(d).join(FILE_NAME))
                .collect(),
        }
    }

    /// The resolver's config files other than ours, read for the loop guard.
    fn config_files(self, root: &Path) -> Vec<PathBuf> {
        let (main, dirs): (&str, &[&str]) = match self {
            Resolver::Resolved => ("etc/systemd/resolved.conf", &[RESOLVED_DIR]),
            Resolver::Dnsmasq => ("etc/dnsmasq.conf", &[DNSMASQ_DIR]),
            Resolver::Unbound => ("etc/unbound/unbound.conf", &UNBOUND_DIRS),
        };
        let mut files = vec![root.join(main)];
        for dir in dirs {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            let mut found: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n != FILE_NAME))
                .collect();
            found.sort();
            files.extend(found);
        }
        files
    }

    /// The addresses this resolver answers on, as the shim's upstream would name them.
    fn serves(self, addr: SocketAddr, shim: SocketAddr) -> bool {
        if addr.port() != 53 || addr == shim {
            return false;
        }
        match (self, addr.ip()) {
            (Resolver::Resolved, IpAddr::V4(ip)) => RESOLVED_STUBS.contains(&ip),
            (Resolver::Resolved, IpAddr::V6(_)) => false,
            // dnsmasq and unbound serve the host on loopback by default.
            (_, ip) => ip.is_loopback(),
        }
    }

    /// The drop-in's text: forward `domain` (and only it) to the shim at `shim`.
    pub fn drop_in_text(self, shim: SocketAddr, domain: &str) -> String {
        let header = "# Written by `hostmesh dns enable`; `hostmesh dns disable` removes it.\n";
        match self {
            // A port other than 53 needs systemd 246 or later (`DNS=ADDR:PORT`).
            Resolver::Resolved => {
                let server = if shim.port() == 53 {
                    shim.ip().to_string()
                } else {
                    shim.to_string()
                };
                format!("{header}[Resolve]\nDNS={server}\nDomains=~{domain}\n")
            }
            Resolver::Dnsmasq => {
                format!("{header}server=/{domain}/{}#{}\n", shim.ip(), shim.port())
            }
            Resolver::Unbound => format!(
                "{header}server:\n    \
                 # unbound refuses to query loopback addresses unless told otherwise.\n    \
                 do-not-query-localhost: no\n    \
                 # The mesh zone is not signed.\n    \
                 domain-insecure: \"{domain}.\"\n\
                 forward-zone:\n    \
                 name: \"{domain}.\"\n    \
                 forward-addr: {}@{}\n",
                shim.ip(),
                shim.port()
            ),
        }
    }

    /// Whether this resolver's existing config already sends every name to `shim`.
    pub fn forwards_everything_to(self, texts: &[String], shim: SocketAddr) -> bool {
        let names_shim = |value: &str| parse_server(value).is_some_and(|a| a == shim);
        match self {
            // Global DNS= servers with the `~.` routing domain take every name.
            Resolver::Resolved => {
                let (mut shim_listed, mut all_names) = (false, false);
                for (key, value) in texts.iter().flat_map(|t| key_values(t, '=')) {
                    match key {
                        "DNS" => shim_listed |= value.split_whitespace().any(names_shim),
                        "Domains" => all_names |= value.split_whitespace().any(|d| d == "~."),
                        _ => {}
                    }
                }
                shim_listed && all_names
            }
            // `server=ADDR` without a `/domain/` is an upstream for every name.
            Resolver::Dnsmasq => texts
                .iter()
                .flat_map(|t| key_values(t, '='))
                .any(|(k, v)| k == "server" && !v.starts_with('/') && names_shim(v)),
            // A forward-zone for "." with the shim among its addresses.
            Resolver::Unbound => texts.iter().any(|text| {
                let mut root_zone = false;
                for (key, value) in key_values(text, ':') {
                    match key {
                        "forward-zone" => root_zone = false,
                        "name" => root_zone = value.trim_matches('"') == ".",
                        "forward-addr" if root_zone && names_shim(value) => return true,
                        _ => {}
                    }
                }
                false
            }),
        }
    }
}

/// `key=value` (or `key: value`) lines of a config file, comments and blanks skipped.
fn key_values(text: &str, separator: char) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(move |line| {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            return None;
        }
        match line.split_once(separator) {
            Some((k, v)) => Some((k.trim(), v.trim())),
            None => Some((line, "")),
        }
    })
}

/// A server address as the resolvers write it: `IP`, `IP:PORT`, `[IP6]:PORT`, `IP#PORT`,
/// `IP@PORT`; the port defaults to 53.
fn parse_server(text: &str) -> Option<SocketAddr> {
    let text = text.trim_matches('"');
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, 53));
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (ip, port) = text.rsplit_once(['#', '@'])?;
    Some(SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
}

/// The nameservers of a resolv.conf, as the shim's `upstream = ["system"]` reads them.
pub fn resolv_conf_servers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.parse().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Why pointing `resolver` at the shim would loop, if it would: the resolver already sends every
/// name to the shim, and the shim hands names outside the mesh domain back to the resolver.
pub fn loop_problem(
    resolver: Resolver,
    shim: SocketAddr,
    upstreams: &[SocketAddr],
    resolver_texts: &[String],
) -> Option<String> {
    if !resolver.forwards_everything_to(resolver_texts, shim) {
        return None;
    }
    let back = upstreams.iter().find(|a| resolver.serves(**a, shim))?;
    Some(format!(
        "refusing to enable: {resolver} already forwards every name to the shim at {shim}, and \
         the shim's upstream {back} is {resolver} itself, so names outside the mesh would go \
         round in a loop; give [dns] upstream the real upstream servers, or remove the \
         catch-all forwarding from {resolver}'s config"
    ))
}

/// Picks the resolver to configure from what is installed (and, live, running).
pub fn choose(installed: &[Resolver], running: Option<&[Resolver]>) -> Result<Resolver, String> {
    let names = |list: &[Resolver]| list.iter().map(|r| r.unit()).collect::<Vec<_>>().join(", ");
    let candidates: Vec<Resolver> = match running {
        Some(running) => installed
            .iter()
            .copied()
            .filter(|r| running.contains(r))
            .collect(),
        None => installed.to_vec(),
    };
    match candidates.as_slice() {
        [one] => Ok(*one),
        [] if installed.is_empty() => Err(
            "no supported resolver recognised (systemd-resolved, dnsmasq with /etc/dnsmasq.d, \
             unbound); point your resolver's mesh domain at the shim yourself \
             (docs/packaging.md), or pass --resolver"
                .to_owned(),
        ),
        [] => Err(format!(
            "installed but not running: {}; start it, or pass --resolver",
            names(installed)
        )),
        several => Err(format!(
            "several resolvers found ({}); choose one with --resolver",
            names(several)
        )),
    }
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
    let config = AgentConfig::load(&config_path, crate::config::process_env())
        .map_err(|p| CliError::Usage(format!("invalid configuration:\n{p}")))?;
    let shim = config.dns.listen;
    let domain = config.dns.domain.trim_end_matches('.');

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
    let text = resolver.drop_in_text(shim, domain);
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
fn reload(resolver: Resolver) -> Result<(), CliError> {
    let action = match resolver {
        Resolver::Dnsmasq => "try-restart",
        Resolver::Resolved | Resolver::Unbound => "try-reload-or-restart",
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
