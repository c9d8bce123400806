//! DNS from a test's point of view: `dig` run inside a host with its output parsed, and Debian's
//! dnsmasq as a stand-in upstream resolver serving names from a hosts file.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use tempfile::TempDir;

use crate::net::Host;
use crate::process::Proc;
use crate::wait::try_wait_for;

/// One resource record as dig prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub rtype: String,
    pub data: String,
}

/// What `dig` got back.
#[derive(Debug, Clone, Default)]
pub struct DigAnswer {
    /// `NOERROR`, `NXDOMAIN`, `SERVFAIL`, `REFUSED`, `FORMERR`; empty when no answer came.
    pub status: String,
    /// Header flags: `qr`, `aa`, `tc`, `rd`, `ra`.
    pub flags: Vec<String>,
    pub answer: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// dig's whole output, for failure messages.
    pub raw: String,
}

impl DigAnswer {
    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    /// The data of every answer record of type `rtype`.
    pub fn data(&self, rtype: &str) -> Vec<String> {
        self.answer
            .iter()
            .filter(|r| r.rtype == rtype)
            .map(|r| r.data.clone())
            .collect()
    }
}

impl Host {
    /// `dig @127.0.0.1 ARGS` (unless ARGS name another `@server`) inside this host (2 s timeout, one try) with the output parsed.
    /// Add `+tcp`, `+notcp +ignore` (keep a truncated UDP answer), `-p PORT`, `@SERVER` to taste.
    pub fn dig(&self, args: &[&str]) -> DigAnswer {
        let mut all = vec!["+time=2", "+tries=1"];
        if !args.iter().any(|a| a.starts_with('@')) {
            all.push("@127.0.0.1");
        }
        all.extend_from_slice(args);
        let out = self.run("dig", &all);
        parse_dig(&String::from_utf8_lossy(&out.stdout))
    }
}

/// Parses dig's default output.
pub fn parse_dig(out: &str) -> DigAnswer {
    let mut answer = DigAnswer {
        raw: out.to_owned(),
        ..DigAnswer::default()
    };
    let mut section = "";
    for line in out.lines() {
        let line = line.trim();
        if let Some(rest) = line.split("status: ").nth(1) {
            answer.status = rest.split(',').next().unwrap_or_default().trim().to_owned();
        } else if let Some(rest) = line.strip_prefix(";; flags:") {
            let flags = rest.split(';').next().unwrap_or_default();
            answer.flags = flags.split_whitespace().map(str::to_owned).collect();
        } else if line.starts_with(";; ANSWER SECTION") {
            section = "answer";
        } else if line.starts_with(";; AUTHORITY SECTION") {
            section = "authority";
        } else if line.starts_with(";; ADDITIONAL SECTION") {
            section = "additional";
        } else if line.is_empty() || line.starts_with(';') {
            if line.is_empty() {
                section = "";
            }
        } else if !section.is_empty() {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if parts.len() >= 4 {
                let record = Record {
                    name: parts[0].to_owned(),
                    ttl: parts[1].parse().unwrap_or(0),
                    rtype: parts[3].to_owned(),
                    data: parts[4..].join(" "),
                };
                match section {
                    "answer" => answer.answer.push(record),
                    "authority" => answer.authority.push(record),
                    _ => answer.additional.push(record),
                }
            }
        }
    }
    answer
}

/// dnsmasq answering names from a hosts file on a host's bridge address, port 53: an upstream
/// resolver for forwarding tests. Killed on drop.
#[derive(Debug)]
pub struct Dnsmasq {
    addr: Ipv4Addr,
    _dir: TempDir,
    _proc: Proc,
}

impl Dnsmasq {
    /// Serves every (name, address) pair; a name listed many times gets many A records (a large
    /// answer). Nothing else is resolved (no upstream of its own).
    #[track_caller]
    pub fn start(host: &Host, records: &[(&str, Ipv4Addr)]) -> Dnsmasq {
        let dir = crate::tmp::tempdir(&format!("dnsmasq-{}", host.name()));
        let hosts: String = records
            .iter()
            .map(|(name, ip)| format!("{ip} {name}\n"))
            .collect();
        let hosts_file: PathBuf = dir.path().join("hosts");
        std::fs::write(&hosts_file, hosts).unwrap_or_else(|e| panic!("writing hosts: {e}"));
        // Authoritative for the records' top-level domains: unknown names there are NXDOMAIN,
        // as a real upstream would answer, rather than REFUSED for want of an upstream.
        let mut tlds: Vec<&str> = records
            .iter()
            .filter_map(|(name, _)| name.rsplit('.').next())
            .collect();
        tlds.sort_unstable();
        tlds.dedup();
        let mut cmd = host.cmd("dnsmasq");
        for tld in tlds {
            cmd.arg(format!("--local=/{tld}/"));
        }
        cmd.args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
        ])
        .arg(format!("--listen-address={}", host.addr()))
        .arg(format!("--addn-hosts={}", hosts_file.display()))
        .arg("--port=53")
        .arg("--user=root")
        .arg(format!("--pid-file={}", dir.path().join("pid").display()))
        .arg("--log-facility=-");
        let what = format!("dnsmasq on {}", host.name());
        let proc = Proc::spawn(cmd, &what, &dir.path().join("dnsmasq.log"));
        let server = format!("@{}", host.addr());
        let name = records.first().map_or("localhost", |(n, _)| *n).to_owned();
        let up = try_wait_for(Duration::from_secs(10), || {
            let a = host.dig(&[&server, &name]);
            (!a.status.is_empty()).then_some(())
        });
        assert!(
            up.is_some(),
            "{what} did not answer within 10s:\n{}",
            proc.log_tail(20)
        );
        Dnsmasq {
            addr: host.addr(),
            _dir: dir,
            _proc: proc,
        }
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }
}
