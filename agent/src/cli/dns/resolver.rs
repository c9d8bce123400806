//! The resolvers `hostmesh dns` knows (systemd-resolved, dnsmasq, unbound): where each keeps its
//! drop-ins, what ours says, how to tell which one a host uses, and the loop guard.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::ValueEnum;

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
pub(super) const RESOLVED_DIR: &str = "etc/systemd/resolved.conf.d";
pub(super) const DNSMASQ_DIR: &str = "etc/dnsmasq.d";
pub(super) const UNBOUND_DIRS: [&str; 2] = ["etc/unbound/unbound.conf.d", "etc/unbound/conf.d"];
pub(super) const FILE_NAME: &str = "hostmesh.conf";
/// Where systemd-resolved's stub listens (its own address as the shim's upstream).
pub(super) const RESOLVED_STUBS: [Ipv4Addr; 2] =
    [Ipv4Addr::new(127, 0, 0, 53), Ipv4Addr::new(127, 0, 0, 54)];

impl Resolver {
    pub(super) const ALL: [Resolver; 3] =
        [Resolver::Resolved, Resolver::Dnsmasq, Resolver::Unbound];

    /// The systemd unit that runs it.
    pub(super) fn unit(self) -> &'static str {
        match self {
            Resolver::Resolved => "systemd-resolved",
            Resolver::Dnsmasq => "dnsmasq",
            Resolver::Unbound => "unbound",
        }
    }

    /// Whether its program is installed in the tree.
    pub(super) fn installed(self, root: &Path) -> bool {
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
    pub(super) fn drop_in(self, root: &Path) -> PathBuf {
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
    pub(super) fn drop_ins(self, root: &Path) -> Vec<PathBuf> {
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
    pub(super) fn config_files(self, root: &Path) -> Vec<PathBuf> {
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
    pub(super) fn serves(self, addr: SocketAddr, shim: SocketAddr) -> bool {
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

    /// The drop-in's text: forward `domains` (the mesh domain, and `consul` with Consul names on)
    /// and only them to the shim at `shim`.
    pub fn drop_in_text(self, shim: SocketAddr, domains: &[&str]) -> String {
        let header = "# Written by `hostmesh dns enable`; `hostmesh dns disable` removes it.\n";
        match self {
            // A port other than 53 needs systemd 246 or later (`DNS=ADDR:PORT`).
            Resolver::Resolved => {
                let server = if shim.port() == 53 {
                    shim.ip().to_string()
                } else {
                    shim.to_string()
                };
                let routes: Vec<String> = domains.iter().map(|d| format!("~{d}")).collect();
                format!(
                    "{header}[Resolve]\nDNS={server}\nDomains={}\n",
                    routes.join(" ")
                )
            }
            // One `server=` line takes several domains: `server=/mesh/consul/ADDR#PORT`.
            Resolver::Dnsmasq => {
                let routes: String = domains.iter().map(|d| format!("/{d}")).collect();
                format!("{header}server={routes}/{}#{}\n", shim.ip(), shim.port())
            }
            Resolver::Unbound => {
                let mut text = format!(
                    "{header}server:\n    \
                     # unbound refuses to query loopback addresses unless told otherwise.\n    \
                     do-not-query-localhost: no\n    \
                     # The mesh's zones are not signed.\n"
                );
                for domain in domains {
                    text.push_str(&format!("    domain-insecure: \"{domain}.\"\n"));
                }
                for domain in domains {
                    text.push_str(&format!(
                        "forward-zone:\n    name: \"{domain}.\"\n    forward-addr: {}@{}\n",
                        shim.ip(),
                        shim.port()
                    ));
                }
                text
            }
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
pub(super) fn key_values(text: &str, separator: char) -> impl Iterator<Item = (&str, &str)> {
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
pub(super) fn parse_server(text: &str) -> Option<SocketAddr> {
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
