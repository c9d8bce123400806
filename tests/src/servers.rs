//! Real servers as the apps behind the mesh: Debian's nginx (static files, a 10 MiB download, an
//! upload echo) and redis-server, each inside a host with everything (config, pid, logs, temp
//! files, data) in its own temp dir, killed on drop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tempfile::TempDir;

use crate::net::Host;
use crate::process::Proc;
use crate::wait::try_wait_for;

/// Size of the file nginx serves at `/big`.
pub const BIG_FILE_LEN: usize = 10 * 1024 * 1024;

/// Largest request body `/echo` accepts.
pub const ECHO_MAX_BODY: &str = "64m";

/// The echo module Debian's `nginx-light` pulls in (package `libnginx-mod-http-echo`).
const ECHO_MODULE: &str = "/usr/lib/nginx/modules/ngx_http_echo_module.so";

/// Debian's nginx serving, on `0.0.0.0:port` in a host:
/// - `/`: the body given to [`Nginx::start`] (`text/plain`);
/// - `/big`: [`BIG_FILE_LEN`] pseudo-random bytes (see [`Nginx::big_sha256`], [`Nginx::big_path`]);
/// - `/echo`: answers 200 with the request body (up to [`ECHO_MAX_BODY`], held in memory), for
///   upload tests;
/// - `/healthz`: 200 `ok`.
///
/// One process (`master_process off`), so killing it leaves no workers behind.
#[derive(Debug)]
pub struct Nginx {
    host: Host,
    port: u16,
    big_sha256: String,
    proc: Proc,
    dir: TempDir,
}

impl Nginx {
    /// Starts nginx and returns once `/healthz` answers 200 from inside the host; panics (with
    /// nginx's log) if it exits or doesn't answer within 10 s.
    #[track_caller]
    pub fn start(host: &Host, port: u16, body: &str) -> Nginx {
        let dir = crate::tmp::tempdir(&format!("nginx-{}-{port}", host.name()));
        let d = dir.path();
        let www = d.join("www");
        for sub in ["www", "tmp", "logs"] {
            let p = d.join(sub);
            std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("creating {}: {e}", p.display()));
        }
        write(&www.join("index.txt"), body.as_bytes());
        let big = pseudo_random(BIG_FILE_LEN, u64::from(port));
        write(&www.join("big"), &big);
        let big_sha256 = sha256_hex(&big);
        let conf = d.join("nginx.conf");
        write(&conf, nginx_conf(d, port).as_bytes());

        let mut cmd = host.cmd("/usr/sbin/nginx");
        cmd.arg("-p")
            .arg(d)
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr"]);
        let what = format!("nginx :{port} on {}", host.name());
        let mut proc = Proc::spawn(cmd, &what, &d.join("logs/nginx.log"));
        let url = format!("http://127.0.0.1:{port}/healthz");
        let up = try_wait_for(Duration::from_secs(10), || {
            if let Some(st) = proc.try_exit() {
                panic!("{what} exited ({st}):\n{}", proc.log_tail(30));
            }
            matches!(host.curl(&url), Ok((200, _))).then_some(())
        });
        assert!(
            up.is_some(),
            "{what} did not answer within 10s:\n{}",
            proc.log_tail(30)
        );
        Nginx {
            host: host.clone(),
            port,
            big_sha256,
            proc,
            dir,
        }
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address on the bridge: `<host addr>:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.host.addr()), self.port)
    }

    /// `http://<host addr>:<port><path>`; `path` starts with `/`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The file served at `/big`.
    pub fn big_path(&self) -> PathBuf {
        self.dir.path().join("www/big")
    }

    /// Lowercase hex SHA-256 of `/big`.
    pub fn big_sha256(&self) -> &str {
        &self.big_sha256
    }

    /// nginx's error log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }

    /// The access log so far (one line per request: address, request line, status, bytes sent).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("logs/access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        crate::logs::dump_on_panic(self.proc.what(), self.proc.log_path());
    }
}

fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    // The echo module comes with Debian's nginx-light; without it there is no /echo.
    let (load_echo, echo) = if Path::new(ECHO_MODULE).exists() {
        (
            format!("load_module {ECHO_MODULE};"),
            format!(
                "location = /echo {{
            client_max_body_size {ECHO_MAX_BODY};
            client_body_buffer_size {ECHO_MAX_BODY};
            default_type application/octet-stream;
            echo_read_request_body;
            echo_request_body;
        }}"
            ),
        )
    } else {
        (String::new(), String::new())
    };
    // Every path nginx would otherwise take from its build (/run, /var/log/nginx, /var/lib/nginx)
    // is set here, so nothing outside the temp dir is touched.
    format!(
        "{load_echo}
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
lock_file {d}/nginx.lock;
error_log stderr notice;
events {{
    worker_connections 4096;
}}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    types {{
        text/plain txt;
    }}
    default_type application/octet-stream;
    keepalive_requests 100000;
    server {{
        listen 0.0.0.0:{port} backlog=4096;
        root {d}/www;
        location = / {{
            try_files /index.txt =404;
        }}
        location = /healthz {{
            default_type text/plain;
            return 200 \"ok\\n\";
        }}
        location = /big {{
        }}
        {echo}
        location / {{
            return 404;
        }}
    }}
}}
"
    )
}

/// Debian's redis-server on `0.0.0.0:port` in a host: no persistence (`--save ''`,
/// `--appendonly no`), no protected mode, in the foreground, with its working dir in a temp dir.
#[derive(Debug)]
pub struct RedisServer {
    host: Host,
    port: u16,
    proc: Proc,
    _dir: TempDir,
}

impl RedisServer {
    /// Starts redis and returns once `PING` answers `PONG` from inside the host; panics (with
    /// redis's log) if it exits or doesn't answer within 10 s.
    #[track_caller]
    pub fn start(host: &Host, port: u16) -> RedisServer {
        let dir = crate::tmp::tempdir(&format!("redis-{}-{port}", host.name()));
        let mut cmd = host.cmd("redis-server");
        cmd.args(["--bind", "0.0.0.0", "--port"])
            .arg(port.to_string())
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
                "--daemonize",
                "no",
                "--logfile",
                "",
            ])
            .arg("--dir")
            .arg(dir.path());
        let what = format!("redis-server :{port} on {}", host.name());
        let mut proc = Proc::spawn(cmd, &what, &dir.path().join("redis.log"));
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port);
        let up = try_wait_for(Duration::from_secs(10), || {
            if let Some(st) = proc.try_exit() {
                panic!("{what} exited ({st}):\n{}", proc.log_tail(30));
            }
            (try_redis_cli(host, addr, &["PING"]).ok()? == "PONG").then_some(())
        });
        assert!(
            up.is_some(),
            "{what} did not answer within 10s:\n{}",
            proc.log_tail(30)
        );
        RedisServer {
            host: host.clone(),
            port,
            proc,
            _dir: dir,
        }
    }

    /// The host it runs in.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its address on the bridge: `<host addr>:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.host.addr()), self.port)
    }

    /// redis's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.proc.log_path()).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        crate::logs::dump_on_panic(self.proc.what(), self.proc.log_path());
    }
}

/// `redis-cli -h IP -p PORT ARGS…` inside `host`; returns stdout without the trailing newline
/// (e.g. `PONG`; redis error replies come back as text such as `ERR unknown command …`, since
/// redis-cli exits 0 for them). Panics, with stderr, if redis-cli fails (can't connect, reset).
#[track_caller]
pub fn redis_cli(host: &Host, addr: SocketAddr, args: &[&str]) -> String {
    try_redis_cli(host, addr, args)
        .unwrap_or_else(|e| panic!("redis-cli {addr} {args:?} in {}: {e}", host.name()))
}

/// Like [`redis_cli`] but returns redis-cli's stderr (and exit status) instead of panicking when
/// it fails, for tests that expect a failure.
pub fn try_redis_cli(host: &Host, addr: SocketAddr, args: &[&str]) -> Result<String, String> {
    let ip = addr.ip().to_string();
    let port = addr.port().to_string();
    let mut all = vec!["-h", ip.as_str(), "-p", port.as_str()];
    all.extend_from_slice(args);
    let out = host.run("redis-cli", &all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // redis-cli reports connect failures on stderr but may still exit 0 for some of them.
    if !out.status.success() || (stdout.trim().is_empty() && !stderr.trim().is_empty()) {
        return Err(format!(
            "({}) {}{}",
            out.status,
            stderr.trim(),
            stdout.trim()
        ));
    }
    Ok(stdout.trim_end_matches('\n').to_string())
}

/// Downloads `url` with curl inside `host` (`--fail`, 2 s connect timeout, `max_time` overall)
/// and returns the lowercase hex SHA-256 and length of what arrived, or curl's error.
pub fn curl_sha256(host: &Host, url: &str, max_time: Duration) -> Result<(String, usize), String> {
    let dir = crate::tmp::tempdir(&format!("download-{}", host.name()));
    let file = dir.path().join("body");
    let file_s = file.to_string_lossy().into_owned();
    let max = format!("{:.3}", max_time.as_secs_f64());
    let out = host.run(
        "curl",
        &[
            "--silent",
            "--show-error",
            "--fail",
            "--noproxy",
            "*",
            "--connect-timeout",
            crate::curl::CONNECT_TIMEOUT,
            "--max-time",
            &max,
            "--output",
            &file_s,
            url,
        ],
    );
    if !out.status.success() {
        return Err(format!(
            "curl {url} ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let data = std::fs::read(&file).map_err(|e| format!("reading {file_s}: {e}"))?;
    Ok((sha256_hex(&data), data.len()))
}

/// Lowercase hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `len` deterministic pseudo-random bytes (xorshift64*, seeded by `seed`): incompressible and
/// position-dependent, so a dropped, duplicated or reordered chunk changes the hash.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

#[track_caller]
fn write(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
