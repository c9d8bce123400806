//! A real, single-member etcd (Debian's 3.4) in a host of its own, that tests can query, kill,
//! restart, and compact; optionally serving TLS with client certificates ([`Etcd::start_tls`])
//! and with auth enabled ([`Etcd::enable_auth`]).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hostmesh_registrar::etcd::launch::Member;
use tempfile::TempDir;

use crate::certs::{CertFiles, TestCa};
use crate::net::{Host, Net};
use crate::process::{Proc, run};
use crate::wait::try_wait_for;

/// The name of the etcd host in its `Net` (so no test host may be called `etcd`).
pub const ETCD_HOST: &str = "etcd";
/// Client port.
pub const CLIENT_PORT: u16 = 2379;
/// Peer port (only the member itself uses it).
pub const PEER_PORT: u16 = 2380;
/// How long `start` and `restart` wait for a healthy endpoint: a cold etcd on a busy 2-core
/// machine elects itself in about a second.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The root user's password once [`Etcd::enable_auth`] ran.
pub const ROOT_PASSWORD: &str = "hmt-root-secret";

/// A running (or deliberately killed) etcd. Killed on drop; its log is shown if the test panicked.
#[derive(Debug)]
pub struct Etcd {
    host: Host,
    dir: TempDir,
    log: PathBuf,
    proc: Option<Proc>,
    tls: Option<EtcdTls>,
    /// The password the harness's etcdctl logs in as root with, once auth is on.
    root_password: Option<String>,
}

/// An etcd's TLS material: its CA (to issue client certificates from), its server certificate
/// and the client certificate the harness's own etcdctl uses.
#[derive(Debug)]
pub struct EtcdTls {
    pub ca: TestCa,
    server: CertFiles,
    harness: CertFiles,
}

impl Etcd {
    /// Starts etcd in a new host `etcd` of `net`, listening on that host's address and on its
    /// loopback, with a fresh data directory, and waits until it is healthy.
    #[track_caller]
    pub fn start(net: &Net) -> Etcd {
        Etcd::start_with(net, false)
    }

    /// Like [`Etcd::start`], but clients must speak TLS and present a certificate from
    /// [`EtcdTls::ca`] (`--client-cert-auth`); [`Etcd::endpoint`] is then `https://`.
    #[track_caller]
    pub fn start_tls(net: &Net) -> Etcd {
        Etcd::start_with(net, true)
    }

    #[track_caller]
    fn start_with(net: &Net, tls: bool) -> Etcd {
        let host = net.host(ETCD_HOST);
        let dir = crate::tmp::tempdir("etcd");
        let log = dir.path().join("etcd.log");
        let tls = tls.then(|| {
            let ca = TestCa::new();
            EtcdTls {
                server: ca.server("etcd-server", &[host.addr(), Ipv4Addr::LOCALHOST]),
                harness: ca.client("hmt-harness"),
                ca,
            }
        });
        let mut etcd = Etcd {
            host,
            dir,
            log,
            proc: None,
            tls,
            root_password: None,
        };
        etcd.spawn();
        etcd
    }

    /// The TLS material when started with [`Etcd::start_tls`].
    #[track_caller]
    pub fn tls(&self) -> &EtcdTls {
        self.tls
            .as_ref()
            .expect("this etcd was not started with Etcd::start_tls")
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Creates the root user (password [`ROOT_PASSWORD`]) and enables auth; the harness's own
    /// etcdctl calls log in as root from then on.
    #[track_caller]
    pub fn enable_auth(&mut self) {
        self.ctl(&[
            "user",
            "add",
            "root",
            &format!("--new-user-password={ROOT_PASSWORD}"),
        ]);
        // etcdctl 3.4 creates and grants the root role itself when it is missing.
        self.ctl(&["auth", "enable"]);
        self.root_password = Some(ROOT_PASSWORD.to_owned());
    }

    /// Tells the harness root's password after something else (a script) enabled auth.
    pub fn set_root_password(&mut self, password: &str) {
        self.root_password = Some(password.to_owned());
    }

    /// Runs `etcdctl ARGS` inside the etcd host as `user` with `password` (not as root): stdout,
    /// or stderr as the error.
    pub fn try_ctl_as(&self, user: &str, password: &str, args: &[&str]) -> Result<String, String> {
        let out = self.etcdctl_as(Some((user, password)), args, "2s", "5s");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    #[track_caller]
    fn spawn(&mut self) {
        let addr = self.host.addr();
        let scheme = self.scheme();
        let client = format!("{scheme}://{addr}:{CLIENT_PORT}");
        let peer = format!("http://{addr}:{PEER_PORT}");
        let data = self.dir.path().join("data");
        let mut cmd = self.host.cmd("etcd");
        // Loopback too, so etcdctl inside the etcd host needs no address.
        let listen = format!("{client},{scheme}://127.0.0.1:{CLIENT_PORT}");
        cmd.args(
            Member {
                name: "hmt",
                data_dir: &data,
                client: &listen,
                advertise: &client,
                peer: &peer,
            }
            .args(),
        );
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server.cert)
                .arg("--key-file")
                .arg(&tls.server.key)
                .arg("--client-cert-auth")
                .arg("--trusted-ca-file")
                .arg(tls.ca.cert());
        }
        self.proc = Some(Proc::spawn(cmd, "etcd", &self.log));
        self.wait_healthy();
    }

    #[track_caller]
    fn wait_healthy(&mut self) {
        let healthy = try_wait_for(START_TIMEOUT, || {
            if let Some(p) = self.proc.as_mut()
                && let Some(st) = p.try_exit()
            {
                panic!(
                    "etcd exited ({st}) before becoming healthy; log:\n{}",
                    p.log_tail(100)
                );
            }
            self.is_healthy().then_some(())
        });
        if healthy.is_none() {
            panic!(
                "etcd not healthy after {START_TIMEOUT:?}; log:\n{}",
                crate::logs::tail(&self.log, 100)
            );
        }
    }

    /// The host etcd runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// etcd's address on the bridge (what [`Host::cut_from`] takes to partition a host from etcd).
    pub fn addr(&self) -> Ipv4Addr {
        self.host.addr()
    }

    /// The client URL other hosts use, `http://198.18.0.x:2379` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        format!("{}://{}:{CLIENT_PORT}", self.scheme(), self.host.addr())
    }

    /// etcd's whole log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The pid of the running etcd, if any.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// Whether `etcdctl endpoint health` succeeds right now (within 2 s).
    pub fn is_healthy(&self) -> bool {
        self.etcdctl(&["endpoint", "health"], "1s", "2s")
            .status
            .success()
    }

    fn etcdctl(&self, args: &[&str], dial: &str, command: &str) -> Output {
        let root = self.root_password.as_deref().map(|p| ("root", p));
        self.etcdctl_as(root, args, dial, command)
    }

    fn etcdctl_as(
        &self,
        user: Option<(&str, &str)>,
        args: &[&str],
        dial: &str,
        command: &str,
    ) -> Output {
        let mut cmd = self.host.cmd("etcdctl");
        cmd.env("ETCDCTL_API", "3").args([
            "--endpoints",
            &format!("{}://127.0.0.1:{CLIENT_PORT}", self.scheme()),
            "--dial-timeout",
            dial,
            "--command-timeout",
            command,
        ]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert")
                .arg(tls.ca.cert())
                .arg("--cert")
                .arg(&tls.harness.cert)
                .arg("--key")
                .arg(&tls.harness.key);
        }
        // From the environment, not the command line, like an operator should (ps shows
        // arguments to everyone).
        if let Some((name, password)) = user {
            cmd.env("ETCDCTL_USER", format!("{name}:{password}"));
        }
        cmd.args(args);
        run(cmd, Duration::from_secs(60))
    }

    /// Runs `etcdctl ARGS` (API v3) inside the etcd host; stdout, or stderr as the error.
    ///
    /// Against a dead etcd this takes the whole 5 s command timeout: etcdctl 3.4 dials lazily, so
    /// its dial timeout never fires and the request waits out the command timeout instead.
    pub fn try_ctl(&self, args: &[&str]) -> Result<String, String> {
        let out = self.etcdctl(args, "2s", "5s");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Runs `etcdctl ARGS` (API v3) inside the etcd host and returns stdout; panics with stderr on
    /// failure.
    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> String {
        self.try_ctl(args)
            .unwrap_or_else(|e| panic!("`etcdctl {}` failed: {e}", args.join(" ")))
    }

    /// Runs `etcdctl -w json ARGS` and parses the output.
    #[track_caller]
    pub fn ctl_json(&self, args: &[&str]) -> serde_json::Value {
        let out = self.ctl(&[&["-w", "json"], args].concat());
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("`etcdctl -w json {}`: {e}: {out}", args.join(" ")))
    }

    /// All keys under `prefix` with their values, in key order. Keys and values are decoded from
    /// etcdctl's JSON (base64), so values with newlines or odd bytes survive intact (lossily as
    /// UTF-8).
    #[track_caller]
    pub fn get_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        let v = self.ctl_json(&["get", "--prefix", prefix]);
        // etcdctl omits `kvs` entirely when nothing matches.
        let Some(kvs) = v.get("kvs").and_then(|k| k.as_array()) else {
            return Vec::new();
        };
        kvs.iter()
            .map(|kv| (decode(kv, "key"), decode(kv, "value")))
            .collect()
    }

    /// The value of `key`, if present.
    #[track_caller]
    pub fn get(&self, key: &str) -> Option<String> {
        let v = self.ctl_json(&["get", key]);
        v.get("kvs")
            .and_then(|k| k.as_array())
            .and_then(|kvs| kvs.first())
            .map(|kv| decode(kv, "value"))
    }

    /// Writes `key` = `value` (no lease). Values starting with `-` work too.
    #[track_caller]
    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", "--", key, value]);
    }

    /// Deletes every key under `prefix`; returns how many were deleted.
    #[track_caller]
    pub fn delete_prefix(&self, prefix: &str) -> u64 {
        let out = self.ctl(&["del", "--prefix", prefix]);
        out.trim().parse().unwrap_or(0)
    }

    /// The store's current revision.
    #[track_caller]
    pub fn revision(&self) -> i64 {
        // Any read returns the header with the revision; the key need not exist (and 3.4's
        // etcdctl has no --count-only).
        let v = self.ctl_json(&["get", "--keys-only", "/"]);
        v.pointer("/header/revision")
            .and_then(serde_json::Value::as_i64)
            .unwrap_or_else(|| panic!("no revision in etcdctl output {v}"))
    }

    /// Compacts the history up to the current revision (physically, so it has taken effect when
    /// this returns) and returns that revision. A watcher asking for an older revision then fails
    /// with "required revision has been compacted". Compacting twice at one revision is fine.
    #[track_caller]
    pub fn compact_to_latest(&self) -> i64 {
        let rev = self.revision();
        if let Err(e) = self.try_ctl(&["compact", "--physical", &rev.to_string()]) {
            assert!(
                e.contains("required revision has been compacted"),
                "compacting etcd at {rev}: {e}"
            );
        }
        rev
    }

    /// SIGKILLs etcd (no clean shutdown, like a crash or power loss of its host) and reaps it.
    /// Its data directory stays for [`Etcd::restart`].
    pub fn kill(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// Starts etcd again on the same data directory (killing it first if still running) and waits
    /// until healthy.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        crate::logs::note(&self.log, "restarting etcd");
        self.spawn();
    }
}

impl Etcd {
    /// Kills etcd, deletes its data and starts an empty one at the same address: a cluster
    /// rebuilt from nothing (revisions start again at 1).
    #[track_caller]
    pub fn wipe_and_restart(&mut self) {
        self.kill();
        let data = self.dir.path().join("data");
        std::fs::remove_dir_all(&data)
            .unwrap_or_else(|e| panic!("removing {}: {e}", data.display()));
        crate::logs::note(&self.log, "starting an empty etcd");
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        crate::logs::dump_on_panic("etcd log", &self.log);
        self.kill();
    }
}

#[track_caller]
fn decode(kv: &serde_json::Value, field: &str) -> String {
    let b64 = kv.get(field).and_then(|v| v.as_str()).unwrap_or_default();
    let bytes = BASE64
        .decode(b64)
        .unwrap_or_else(|e| panic!("etcdctl gave invalid base64 in {field}: {e}"));
    String::from_utf8_lossy(&bytes).into_owned()
}
