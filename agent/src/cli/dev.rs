//! `hostmesh dev`: a one-command local mesh for trying hostmesh on a laptop, without root.
//!
//! Starts a private etcd child process (unless `--etcd` is given) in a temp dir, two demo HTTP
//! services served by this process, and an agent on unprivileged ports with capture `listen`,
//! then prints what to try. Ctrl-C stops everything; the temp dir goes with it.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use clap::Args;
use hostmesh_registrar::etcd::launch::Member;

use super::CliError;
use hostmesh_config as config;

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Use this etcd instead of starting a private one
    #[arg(long, value_name = "URL")]
    etcd: Option<String>,
}

/// The demo services: (name, port clients use, body).
const DEMOS: [(&str, u16, &str); 2] = [("web", 8080, "web"), ("api", 8081, "api")];

pub fn run(args: DevArgs) -> Result<(), CliError> {
    let dir = tempfile::Builder::new()
        .prefix("hostmesh-dev-")
        .tempdir()
        .map_err(|e| CliError::Runtime(format!("temp dir: {e}")))?;
    let mut etcd = None;
    let endpoint = match args.etcd {
        Some(url) => url,
        None => {
            let (child, url) = start_etcd(dir.path())?;
            etcd = Some(EtcdChild(child));
            url
        }
    };
    let result = super::block_on(run_mesh(dir.path().to_path_buf(), endpoint));
    drop(etcd);
    drop(dir);
    result
}

/// Kills the private etcd however `dev` ends.
struct EtcdChild(Child);

impl Drop for EtcdChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16, CliError> {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| CliError::Runtime(format!("no free port: {e}")))
}

fn find_etcd() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
}

fn start_etcd(dir: &Path) -> Result<(Child, String), CliError> {
    let bin = find_etcd().ok_or_else(|| {
        CliError::Runtime(
            "etcd not found: install Debian's etcd-server package (apt-get install etcd-server), \
             or pass --etcd URL to use a running one"
                .into(),
        )
    })?;
    let (client, peer) = (free_port()?, free_port()?);
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log"))
        .map_err(|e| CliError::Runtime(format!("etcd log: {e}")))?;
    let child = Command::new(&bin)
        .args(
            Member {
                name: "dev",
                data_dir: &dir.join("etcd"),
                client: &url,
                advertise: &url,
                peer: &peer_url,
            }
            .args(),
        )
        .stdin(Stdio::null())
        .stdout(
            log.try_clone()
                .map_err(|e| CliError::Runtime(e.to_string()))?,
        )
        .stderr(log)
        .spawn()
        .map_err(|e| CliError::Runtime(format!("starting {}: {e}", bin.display())))?;
    Ok((child, url))
}

async fn run_mesh(dir: PathBuf, endpoint: String) -> Result<(), CliError> {
    wait_for_etcd(&endpoint, &dir).await?;
    let services_dir = dir.join("services.d");
    std::fs::create_dir_all(&services_dir).map_err(|e| CliError::Runtime(e.to_string()))?;
    let mut demo_targets = Vec::new();
    for (name, port, body) in DEMOS {
        let target = serve_demo(body).await?;
        demo_targets.push((name, port, target));
        let definition = format!(
            "name = \"{name}\"\nport = {port}\ntarget = \"{target}\"\nprotocol = \"http\"\n\n\
             [check]\nhttp = \"/healthz\"\ninterval = \"2s\"\ntimeout = \"1s\"\n"
        );
        std::fs::write(services_dir.join(format!("{name}-1.toml")), definition)
            .map_err(|e| CliError::Runtime(e.to_string()))?;
    }
    let admin = format!("127.0.0.1:{}", free_port()?);
    let config_text = format!(
        r#"[agent]
host = "dev"
advertise_address = "127.0.0.1"
services_dir = "{services}"
data_dir = "{data}"
drain = "0s"

[etcd]
endpoints = ["{endpoint}"]
lease_ttl = "5s"

[dns]
listen = "127.0.0.1:{dns}"

[proxy]
capture = "listen"
outbound_listen = "127.0.0.1:{outbound}"
inbound_listen = "127.0.0.1:{inbound}"

[tls]
mode = "disabled"

[admin]
listen = "{admin}"
"#,
        services = services_dir.display(),
        data = dir.join("data").display(),
        dns = free_port()?,
        outbound = free_port()?,
        inbound = free_port()?,
    );
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, config_text).map_err(|e| CliError::Runtime(e.to_string()))?;
    // Only the agent's own variables would change what we just wrote: ignore the environment.
    let (config, specs) = config::load_all(&config_path, Vec::<(String, String)>::new())
        .map_err(|p| CliError::Runtime(format!("the dev config is invalid (a bug):\n{p}")))?;
    crate::telemetry::init(config.log.format, "warn,hostmesh=info");

    let dns_listen = config.dns.listen;
    let prefix = config.etcd.prefix.clone();
    let agent = tokio::spawn(crate::run::run(config_path, config, specs, None));
    // The agent allocates the demo services' VIPs as it registers them: show real addresses.
    let vips = wait_for_vips(&endpoint, &prefix, &agent).await?;
    let demos: String = demo_targets
        .iter()
        .zip(&vips)
        .map(|((name, port, _), vip)| {
            format!(
                "  curl http://{vip}:{port}/              # {name}.mesh:{port} through the mesh\n"
            )
        })
        .collect();
    super::print(&format!(
        "hostmesh dev: a private mesh is running (Ctrl-C stops everything and removes {dir})\n\
         \n  etcd:   {endpoint}\n  agent:  admin http://{admin}, DNS {dns_listen}\n\nTry:\n{demos}  \
         dig @{dns_ip} -p {dns_port} web.mesh\n  \
         dig @{dns_ip} -p {dns_port} SRV _api._tcp.mesh\n  \
         hostmesh services --etcd {endpoint}\n  \
         hostmesh endpoints web --etcd {endpoint} --admin {admin}\n  \
         curl http://{admin}/status\n  \
         curl http://{admin}/metrics",
        dir = dir.display(),
        dns_ip = dns_listen.ip(),
        dns_port = dns_listen.port(),
    ));
    match agent.await {
        Ok(r) => r.map_err(|e| CliError::Runtime(e.to_string())),
        Err(e) => Err(CliError::Runtime(format!("the agent stopped: {e}"))),
    }
}

/// Waits until both demo services have a VIP in etcd, or the agent stopped.
async fn wait_for_vips(
    endpoint: &str,
    prefix: &str,
    agent: &tokio::task::JoinHandle<Result<(), crate::run::RunError>>,
) -> Result<Vec<std::net::Ipv4Addr>, CliError> {
    let options = hostmesh_registrar::etcd::EtcdOptions::with_endpoints(vec![endpoint.to_owned()]);
    let layout = hostmesh_registrar::keys::Layout::new(prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if agent.is_finished() {
            return Err(CliError::Runtime(
                "the agent stopped during start-up".into(),
            ));
        }
        if let Ok(client) = options.connect().await
            && let Ok(snapshot) = hostmesh_registrar::catalog::fetch(
                &client,
                &layout,
                hostmesh_config::default_vip_range(),
            )
            .await
        {
            let vips: Option<Vec<_>> = DEMOS
                .iter()
                .map(|(name, _, _)| snapshot.vips.get(*name).copied())
                .collect();
            if let Some(vips) = vips {
                return Ok(vips);
            }
        }
        if tokio::time::Instant::now() > deadline {
            return Err(CliError::Runtime(
                "the demo services got no VIP within 20s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_etcd(endpoint: &str, dir: &Path) -> Result<(), CliError> {
    let options = hostmesh_registrar::etcd::EtcdOptions::with_endpoints(vec![endpoint.to_owned()]);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(client) = options.connect().await
            && client.kv_client().get("/", None).await.is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            return Err(CliError::Runtime(format!(
                "etcd at {endpoint} did not come up within 20s; its log ends:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A demo app: answers `/` with a greeting and `/healthz` with 200.
async fn serve_demo(name: &'static str) -> Result<SocketAddr, CliError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| CliError::Runtime(format!("demo {name}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let app = Router::new()
        .route(
            "/",
            get(move || async move { format!("hello from {name}\n") }),
        )
        .route("/healthz", get(|| async { "ok\n" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}
