//! The real `hostmesh agent` as a process inside a host, with its config rendered from
//! [`AgentOpts`], its log kept for diagnosis, and helpers to query its admin endpoint.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;

use tempfile::TempDir;

use crate::curl::{CurlError, curl_in};
use crate::etcd::Etcd;
use crate::net::Host;
use crate::process::{Proc, Signal, run};
use crate::wait::try_wait_for;

/// Default `[admin] listen`. Every host has its own loopback, so all agents can use the same one.
pub const ADMIN_LISTEN: &str = "127.0.0.1:9190";

/// Configuration for one test agent: TOML keys by section, each value raw TOML (strings quoted:
/// use [`AgentOpts::set_str`] or [`toml_str`]), plus environment variables and service files.
///
/// Defaults (all overridable with [`AgentOpts::set`], removable with [`AgentOpts::unset`]):
///
/// ```toml
/// [agent]
/// host = "<host name>"                 # filled in by Agent::start
/// advertise_address = "<host address>" # filled in by Agent::start
/// services_dir = "<tmp>/services.d"    # filled in by Agent::start
/// data_dir = "<tmp>/data"              # filled in by Agent::start
/// drain = "100ms"
/// [etcd]
/// endpoints = ["<etcd endpoint>"]      # filled in by Agent::start
/// prefix = "/hostmesh"
/// lease_ttl = "3s"
/// [dns]
/// listen = "127.0.0.1:53"
/// [proxy]
/// capture = "listen"
/// [tls]
/// mode = "disabled"                    # AgentOpts::mtls(dir) switches mTLS on
/// [admin]
/// listen = "127.0.0.1:9190"
/// [log]
/// level = "info,hostmesh=debug,hostmesh_registrar=debug"
/// ```
#[derive(Debug, Clone)]
pub struct AgentOpts {
    /// `None` marks a key removed with `unset`, so `Agent::start` won't fill it back in.
    sections: BTreeMap<String, BTreeMap<String, Option<String>>>,
    extra_toml: String,
    env: Vec<(String, String)>,
    services: Vec<(String, String)>,
    bin: Option<PathBuf>,
}

impl Default for AgentOpts {
    fn default() -> Self {
        AgentOpts::new()
    }
}

impl AgentOpts {
    /// The defaults listed on [`AgentOpts`].
    pub fn new() -> AgentOpts {
        AgentOpts {
            sections: BTreeMap::new(),
            extra_toml: String::new(),
            env: Vec::new(),
            services: Vec::new(),
            bin: None,
        }
        // A short drain keeps shutdown tests quick while still exercising the drain path.
        .set_str("agent", "drain", "100ms")
        .set_str("etcd", "prefix", "/hostmesh")
        // Short so that lease-expiry tests finish quickly; etcd 3.4 grants at least 2 s.
        .set_str("etcd", "lease_ttl", "3s")
        .set_str("dns", "listen", "127.0.0.1:53")
        // No nftables capture by default: most tests are about routing, not the capture path.
        .set_str("proxy", "capture", "listen")
        .set_str("tls", "mode", "disabled")
        .set_str("admin", "listen", ADMIN_LISTEN)
        // Debug for hostmesh itself; its libraries (h2, tonic) at debug drown the log.
        .set_str(
            "log",
            "level",
            "info,hostmesh=debug,hostmesh_registrar=debug",
        )
    }

    /// Sets `[section] key = value`, where `value` is raw TOML: `"\"10s\""`, `"5"`, `"[\"a\"]"`.
    pub fn set(mut self, section: &str, key: &str, value: &str) -> AgentOpts {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), Some(value.to_string()));
        self
    }

    /// Sets `[section] key` to the TOML string `value` (quoted and escaped here).
    pub fn set_str(self, section: &str, key: &str, value: &str) -> AgentOpts {
        self.set(section, key, &toml_str(value))
    }

    /// Leaves `[section] key` out of the config, including keys `Agent::start` would fill in, so
    /// the agent's own default applies.
    pub fn unset(mut self, section: &str, key: &str) -> AgentOpts {
        self.sections
            .entry(section.to_string())
            .or_default()
            .insert(key.to_string(), None);
        self
    }

    /// `tls.mode = "mtls"` with the files `hostmesh ca issue --out DIR` writes (the default is
    /// `"disabled"`, so most tests need no certificates).
    pub fn mtls(self, dir: &Path) -> AgentOpts {
        let file = |name: &str| dir.join(name).to_str().expect("utf-8 path").to_owned();
        self.set_str("tls", "mode", "mtls")
            .set_str("tls", "ca_file", &file("ca.pem"))
            .set_str("tls", "cert_file", &file("host.pem"))
            .set_str("tls", "key_file", &file("host.key"))
    }

    /// `[etcd] lease_ttl`, e.g. `"2s"`.
    pub fn lease_ttl(self, ttl: &str) -> AgentOpts {
        self.set_str("etcd", "lease_ttl", ttl)
    }

    /// `[log] level`, e.g. `"trace"` or `"info,hostmesh=debug"`.
    pub fn log_level(self, level: &str) -> AgentOpts {
        self.set_str("log", "level", level)
    }

    /// `[agent] drain`, e.g. `"2s"`.
    pub fn drain(self, drain: &str) -> AgentOpts {
        self.set_str("agent", "drain", drain)
    }

    /// `[agent] zone`.
    pub fn zone(self, zone: &str) -> AgentOpts {
        self.set_str("agent", "zone", zone)
    }

    /// Raw TOML appended after everything else: tables not otherwise set (a table may appear only
    /// once in TOML, so keys of a table set through [`AgentOpts::set`] must be set the same way),
    /// or deliberately broken input. Must start with a `[table]` header.
    pub fn extra_toml(mut self, toml: &str) -> AgentOpts {
        self.extra_toml.push_str(toml);
        self.extra_toml.push('\n');
        self
    }

    /// An environment variable for the agent process, e.g. `HOSTMESH_ETCD__LEASE_TTL`.
    pub fn env(mut self, key: &str, value: &str) -> AgentOpts {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// A service definition present before the agent starts: `<services_dir>/<id>.toml`.
    pub fn service(mut self, id: &str, toml: &str) -> AgentOpts {
        self.services.push((id.to_string(), toml.to_string()));
        self
    }

    /// Runs this binary instead of [`hostmesh_bin`](crate::hostmesh_bin), e.g. an older release
    /// next to the current one in an upgrade test.
    pub fn bin(mut self, bin: impl Into<PathBuf>) -> AgentOpts {
        self.bin = Some(bin.into());
        self
    }

    /// Sets `[section] key` only if neither set nor unset yet.
    fn default_raw(&mut self, section: &str, key: &str, value: String) {
        self.sections
            .entry(section.to_string())
            .or_default()
            .entry(key.to_string())
            .or_insert(Some(value));
    }

    /// The raw value of `[section] key`, if set.
    fn raw(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key)?.as_deref()
    }

    /// The config file text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (section, keys) in &self.sections {
            let keys: Vec<_> = keys
                .iter()
                .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
                .collect();
            if keys.is_empty() {
                continue;
            }
            out.push_str(&format!("[{section}]\n"));
            for (k, v) in keys {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out.push_str(&self.extra_toml);
        out
    }
}

/// `s` as a TOML basic string. JSON string escapes are all valid TOML escapes, so serde_json
/// does the quoting.
pub fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// The inverse of [`toml_str`] for the simple strings the harness reads back (paths, addresses).
fn unquote(raw: &str) -> Option<String> {
    serde_json::from_str(raw).ok()
}

/// A `hostmesh agent` process in a host. Killed on drop; if the test is panicking, the tail of its
/// log is printed first.
#[derive(Debug)]
pub struct Agent {
    host: Host,
    bin: PathBuf,
    dir: TempDir,
    config: PathBuf,
    log: PathBuf,
    services_dir: PathBuf,
    data_dir: PathBuf,
    admin: String,
    env: Vec<(String, String)>,
    proc: Option<Proc>,
}

impl Agent {
    /// Writes the config (see [`AgentOpts`]) and the initial service files into a fresh temp dir,
    /// and spawns `ip netns exec NS hostmesh agent --config <dir>/agent.toml` in `host`, with
    /// stdout and stderr in `<dir>/agent.log`. Does not wait for readiness: call
    /// [`Agent::wait_ready`] (or expect an exit, for config error tests).
    #[track_caller]
    pub fn start(host: &Host, etcd: &Etcd, opts: AgentOpts) -> Agent {
        let bin = opts.bin.clone().unwrap_or_else(crate::binary::hostmesh_bin);
        let dir = crate::tmp::tempdir(&format!("agent-{}", host.name()));
        let mut opts = opts;
        let path_str = |p: &Path| toml_str(&p.to_string_lossy());
        opts.default_raw("agent", "host", toml_str(host.name()));
        opts.default_raw(
            "agent",
            "advertise_address",
            toml_str(&host.addr().to_string()),
        );
        opts.default_raw(
            "agent",
            "services_dir",
            path_str(&dir.path().join("services.d")),
        );
        opts.default_raw("agent", "data_dir", path_str(&dir.path().join("data")));
        opts.default_raw(
            "etcd",
            "endpoints",
            format!("[{}]", toml_str(&etcd.endpoint())),
        );
        // Read back what the agent will use, so helpers look in the right place even when a
        // test overrides these.
        let services_dir = opts
            .raw("agent", "services_dir")
            .and_then(unquote)
            .map_or_else(|| dir.path().join("services.d"), PathBuf::from);
        let data_dir = opts
            .raw("agent", "data_dir")
            .and_then(unquote)
            .map_or_else(|| dir.path().join("data"), PathBuf::from);
        let admin = opts
            .raw("admin", "listen")
            .and_then(unquote)
            .unwrap_or_else(|| ADMIN_LISTEN.to_string());
        // Created here like a package would: the agent is not expected to create services_dir.
        for d in [&services_dir, &data_dir] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("creating {}: {e}", d.display()));
        }
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, opts.render())
            .unwrap_or_else(|e| panic!("writing {}: {e}", config.display()));
        let log = dir.path().join("agent.log");
        let mut agent = Agent {
            host: host.clone(),
            bin,
            dir,
            config,
            log,
            services_dir,
            data_dir,
            admin,
            env: opts.env.clone(),
            proc: None,
        };
        for (id, toml) in &opts.services {
            agent.write_service(id, toml);
        }
        agent.spawn();
        agent
    }

    #[track_caller]
    fn spawn(&mut self) {
        let mut cmd = self.host.cmd(&self.bin);
        cmd.arg("agent")
            .arg("--config")
            .arg(&self.config)
            // A log file is not a terminal: no colour codes in it.
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)));
        let what = format!("hostmesh agent on {}", self.host.name());
        let proc = Proc::spawn(cmd, &what, &self.log);
        // `ip netns exec` execs the agent in place; wait for that exec, so that a signal sent
        // right after `start` reaches the agent and not `ip`. (If it exits first, that's for
        // wait_ready or wait_exit to report.)
        let pid = proc.pid();
        let execed = try_wait_for(Duration::from_secs(10), || {
            match std::fs::read_link(format!("/proc/{pid}/exe")) {
                Ok(exe) => (exe.file_name() != Some("ip".as_ref())).then_some(()),
                Err(_) => Some(()), // gone (or a zombie): nothing left to wait for
            }
        });
        assert!(
            execed.is_some(),
            "{what}: `ip netns exec` did not exec within 10s"
        );
        self.proc = Some(proc);
    }

    /// The host the agent runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The agent's temp dir (config, log, default services and data dirs).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file; tests may rewrite it and send [`Signal::Hup`].
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `[agent] services_dir`.
    pub fn services_dir(&self) -> &Path {
        &self.services_dir
    }

    /// `[agent] data_dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `[admin] listen`, e.g. `127.0.0.1:9190` (inside the host).
    pub fn admin_addr(&self) -> &str {
        &self.admin
    }

    /// The agent's pid while it runs (the agent itself, not `ip`).
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::pid)
    }

    /// The whole log so far (all runs, separated by restart markers).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        crate::logs::tail(&self.log, n)
    }

    /// Writes `<services_dir>/<id>.toml` (atomically, via a rename, so an agent reading the
    /// directory never sees half a file). Takes effect at start or on [`Signal::Hup`].
    #[track_caller]
    pub fn write_service(&self, id: &str, toml: &str) {
        let path = self.services_dir.join(format!("{id}.toml"));
        let tmp = self.services_dir.join(format!(".{id}.toml.tmp"));
        std::fs::write(&tmp, toml).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
        std::fs::rename(&tmp, &path)
            .unwrap_or_else(|e| panic!("renaming to {}: {e}", path.display()));
    }

    /// Removes `<services_dir>/<id>.toml` (no error if absent).
    #[track_caller]
    pub fn remove_service(&self, id: &str) {
        let path = self.services_dir.join(format!("{id}.toml"));
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("removing {}: {e}", path.display()),
        }
    }

    /// GET `http://<admin><path>` from inside the host.
    pub fn try_admin_get(&self, path: &str) -> Result<(u16, String), CurlError> {
        curl_in(self.host.ns(), &[&format!("http://{}{path}", self.admin)])
    }

    /// GET `http://<admin><path>` from inside the host; panics (with the log tail) if the admin
    /// endpoint does not answer at all.
    #[track_caller]
    pub fn admin_get(&self, path: &str) -> (u16, String) {
        self.try_admin_get(path).unwrap_or_else(|e| {
            panic!(
                "admin GET {path} on {}: {e}\nagent log tail:\n{}",
                self.host.name(),
                self.log_tail(50)
            )
        })
    }

    /// Whether `GET /ready` answers 200 right now.
    pub fn is_ready(&self) -> bool {
        matches!(self.try_admin_get("/ready"), Ok((200, _)))
    }

    /// Polls `GET /ready` until 200. Panics with the log tail if the agent exits meanwhile or is
    /// not ready within `timeout`.
    #[track_caller]
    pub fn wait_ready(&mut self, timeout: Duration) {
        let mut last = String::from("no answer yet");
        let ready = try_wait_for(timeout, || {
            if let Some(st) = self.proc.as_mut().and_then(Proc::try_exit) {
                panic!(
                    "agent on {} exited ({st}) before becoming ready; log tail:\n{}",
                    self.host.name(),
                    self.log_tail(100)
                );
            }
            match self.try_admin_get("/ready") {
                Ok((200, _)) => Some(()),
                Ok((code, body)) => {
                    last = format!("{code} {body}");
                    None
                }
                Err(e) => {
                    last = e.to_string();
                    None
                }
            }
        });
        if ready.is_none() {
            panic!(
                "agent on {} not ready after {timeout:?} (last /ready: {last}); log tail:\n{}",
                self.host.name(),
                self.log_tail(100)
            );
        }
    }

    /// `GET /status` as JSON; panics unless it answers 200 with valid JSON.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        let (code, body) = self.admin_get("/status");
        assert_eq!(code, 200, "GET /status on {}: {body}", self.host.name());
        serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!(
                "GET /status on {} is not JSON ({e}): {body}",
                self.host.name()
            )
        })
    }

    /// The VIP this agent gives `service` (from `/status`), once it has one.
    #[track_caller]
    pub fn service_vip(&self, service: &str) -> Option<std::net::Ipv4Addr> {
        self.status()["services"][service]["vip"]
            .as_str()
            .and_then(|v| v.parse().ok())
    }

    /// `GET /metrics` (Prometheus text); panics unless it answers 200.
    #[track_caller]
    pub fn metrics(&self) -> String {
        let (code, body) = self.admin_get("/metrics");
        assert_eq!(code, 200, "GET /metrics on {}: {body}", self.host.name());
        body
    }

    /// The value of one sample (`name{labels}` exactly as exposed) in `/metrics`, 0 when absent
    /// (a counter nothing has counted yet has no sample).
    #[track_caller]
    pub fn sample(&self, series: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }

    /// Sends `sig` to the agent (not to `ip`: see [`Proc::pid`]). No-op once it has been reaped.
    pub fn signal(&self, sig: Signal) {
        if let Some(p) = &self.proc {
            p.signal(sig);
        }
    }

    /// True while the agent process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(Proc::is_running)
    }

    /// Waits up to `timeout` for the agent to exit by itself; its status, or `None` if still
    /// running (or never started).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.proc.as_mut().and_then(|p| p.wait_exit(timeout))
    }

    /// SIGKILLs the agent (a crash: nothing is deregistered) and reaps it.
    pub fn kill(&mut self) {
        if let Some(p) = self.proc.as_mut() {
            p.kill();
        }
    }

    /// Starts the agent again with the same config file, directories and environment, killing it
    /// first if it still runs. Does not wait for readiness. NB: after a kill, the old lease holds
    /// `hosts/<host>/info` until it expires, and the spec says a new agent then refuses to start.
    #[track_caller]
    pub fn restart(&mut self) {
        self.kill();
        crate::logs::note(&self.log, "restarting the agent");
        self.spawn();
    }

    /// A `hostmesh` command to run inside this host (add arguments, then run it).
    pub fn cli(&self) -> Command {
        self.host.cmd(&self.bin)
    }

    /// Runs `hostmesh ARGS` inside this host, e.g. `["services", "--etcd", URL, "--json"]`; the
    /// output whatever the exit status (killed and panicking after 60 s).
    #[track_caller]
    pub fn run_cli(&self, args: &[&str]) -> Output {
        let mut cmd = self.cli();
        cmd.args(args).env("NO_COLOR", "1");
        run(cmd, Duration::from_secs(60))
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        crate::logs::dump_on_panic(&format!("agent log of {}", self.host.name()), &self.log);
        // Dropping the Proc kills and reaps it.
        self.proc = None;
    }
}
