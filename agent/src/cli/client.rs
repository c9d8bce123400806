//! What the client commands (`services`, `endpoints`, ...) connect to: `--etcd`, `--prefix` and
//! `--admin`, with defaults from `--config FILE`, else `/etc/hostmesh/agent.toml` when it exists,
//! else `http://127.0.0.1:2379`, `/hostmesh`, `127.0.0.1:9190`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

use hostmesh_registrar::etcd::EtcdOptions;
use hostmesh_registrar::keys::Layout;

use super::CliError;
use crate::config::DEFAULT_CONFIG_PATH;

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Agent config to take defaults from (default: /etc/hostmesh/agent.toml when it exists)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// etcd endpoint URL (repeatable)
    #[arg(long = "etcd", value_name = "URL")]
    pub etcd: Vec<String>,
    /// Key prefix in etcd
    #[arg(long)]
    pub prefix: Option<String>,
    /// The local agent's admin address
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Give up after this long
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// The resolved targets of a client command.
#[derive(Debug, Clone)]
pub struct Target {
    pub etcd: EtcdOptions,
    pub layout: Layout,
    pub admin: String,
    pub timeout: Duration,
}

impl ClientArgs {
    pub fn resolve(&self) -> Result<Target, CliError> {
        let file = match &self.config {
            Some(p) => Some(read_defaults(p)?),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                Some(read_defaults(Path::new(DEFAULT_CONFIG_PATH))?)
            }
            None => None,
        }
        .unwrap_or_default();
        let endpoints = if !self.etcd.is_empty() {
            self.etcd.clone()
        } else {
            file.endpoints
                .unwrap_or_else(|| vec!["http://127.0.0.1:2379".to_owned()])
        };
        let prefix = self
            .prefix
            .clone()
            .or(file.prefix)
            .unwrap_or_else(|| "/hostmesh".to_owned());
        let admin = self
            .admin
            .clone()
            .or(file.admin)
            .unwrap_or_else(|| "127.0.0.1:9190".to_owned());
        let mut etcd = EtcdOptions::with_endpoints(endpoints);
        etcd.timeout = self.timeout;
        Ok(Target {
            etcd,
            layout: Layout::new(&prefix),
            admin,
            timeout: self.timeout,
        })
    }
}

#[derive(Debug, Default)]
struct FileDefaults {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    admin: Option<String>,
}

/// Only the keys a client needs, read leniently: a client must work with a config that the
/// agent would refuse for unrelated reasons.
fn read_defaults(path: &Path) -> Result<FileDefaults, CliError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    let section = |name: &str| table.get(name).and_then(|v| v.as_table());
    let etcd = section("etcd");
    Ok(FileDefaults {
        endpoints: etcd
            .and_then(|t| t.get("endpoints"))
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            }),
        prefix: etcd
            .and_then(|t| t.get("prefix"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
        admin: section("admin")
            .and_then(|t| t.get("listen"))
            .and_then(|v| v.as_str())
            .map(str::to_owned),
    })
}

impl Target {
    /// Connects to etcd and runs `f`, all within the command's timeout.
    pub async fn with_etcd<T, F, Fut>(&self, f: F) -> Result<T, CliError>
    where
        F: FnOnce(etcd_client::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let endpoints = self.etcd.endpoints.join(",");
        let work = async {
            let client = self
                .etcd
                .connect()
                .await
                .map_err(|e| CliError::Runtime(format!("etcd at {endpoints}: {e}")))?;
            f(client)
                .await
                .map_err(|e| CliError::Runtime(format!("etcd at {endpoints}: {e}")))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                CliError::Runtime(format!(
                    "etcd at {endpoints} did not answer within {:?}",
                    self.timeout
                ))
            })?
    }

    /// GETs a path from the local agent's admin endpoint; `None` when no agent answers.
    pub async fn admin_get(&self, path: &str) -> Option<Vec<u8>> {
        let (status, body) = self
            .admin_request(
                hyper::Method::GET,
                path,
                self.timeout.min(Duration::from_secs(2)),
            )
            .await
            .ok()?;
        (200..300).contains(&status).then_some(body)
    }

    /// Sends one request to the local agent's admin endpoint: its status and body, or why no
    /// agent answered within `timeout`.
    pub async fn admin_request(
        &self,
        method: hyper::Method,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, Vec<u8>), String> {
        let work = async {
            let stream = tokio::net::TcpStream::connect(&self.admin)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header(hyper::header::HOST, &self.admin)
                .body(Empty::<Bytes>::new())
                .map_err(|e| e.to_string())?;
            let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes()
                .to_vec();
            Ok((status, body))
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| format!("no answer within {timeout:?}"))?
            .map_err(|e: String| format!("agent admin endpoint at {}: {e}", self.admin))
    }
}
