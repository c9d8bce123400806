//! What the client commands (`services`, `endpoints`, ...) connect to: `--etcd`, `--prefix`,
//! `--admin` and etcd's TLS and auth (`--etcd-ca`, `--etcd-cert`, `--etcd-key`, `--etcd-user`,
//! `--etcd-password-file`), each defaulting to the same setting in `--config FILE`, else in
//! `/etc/hostmesh/agent.toml` when it exists, else `http://127.0.0.1:2379`, `/hostmesh`,
//! `127.0.0.1:9190` and no TLS or auth.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use ipnet::Ipv4Net;

use hostmesh_registrar::etcd::{ConnectError, EtcdOptions, SettingNames};
use hostmesh_registrar::keys::Layout;

use super::CliError;
use hostmesh_config::DEFAULT_CONFIG_PATH;

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
    /// CA certificate (PEM) that etcd's certificate must chain to; endpoints must be https://
    #[arg(long = "etcd-ca", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) to present to etcd, with --etcd-key
    #[arg(long = "etcd-cert", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Private key (PEM) of --etcd-cert
    #[arg(long = "etcd-key", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user to authenticate as, with --etcd-password-file
    #[arg(long = "etcd-user", value_name = "NAME")]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password (trailing whitespace ignored)
    #[arg(long = "etcd-password-file", value_name = "FILE")]
    pub etcd_password_file: Option<PathBuf>,
    /// The local agent's admin address
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
    /// Give up after this long
    #[arg(long, default_value = "5s", value_parser = hostmesh_wire::duration::parse)]
    pub timeout: Duration,
}

/// The resolved targets of a client command.
#[derive(Debug, Clone)]
pub struct Target {
    pub etcd: EtcdOptions,
    pub layout: Layout,
    /// `dns.vip_range`: the catalog serves no VIP outside it.
    pub vip_range: Ipv4Net,
    pub admin: String,
    pub timeout: Duration,
}

/// `agent.services_dir` as the agent reads it: the default when unset.
pub const DEFAULT_SERVICES_DIR: &str = "/etc/hostmesh/services.d";

/// `agent.services_dir` of `config`, else of `/etc/hostmesh/agent.toml` when it exists, else
/// its default, read as leniently as the other defaults (`hostmesh import consul`'s `--out`).
pub fn services_dir(config: Option<&Path>) -> Result<PathBuf, CliError> {
    Ok(file_defaults(config)?
        .services_dir
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SERVICES_DIR)))
}

/// The defaults of `config`, else of `/etc/hostmesh/agent.toml` when it exists, else none.
fn file_defaults(config: Option<&Path>) -> Result<FileDefaults, CliError> {
    Ok(match config {
        Some(p) => Some(read_defaults(p)?),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Some(read_defaults(Path::new(DEFAULT_CONFIG_PATH))?)
        }
        None => None,
    }
    .unwrap_or_default())
}

impl ClientArgs {
    pub fn resolve(&self) -> Result<Target, CliError> {
        let file = file_defaults(self.config.as_deref())?;
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
        let mut names = SettingNames::CONFIG;
        // Each setting from its flag, else from the file; errors name where it came from.
        etcd.ca_file = pick(&self.etcd_ca, file.ca_file, &mut names.ca_file, "--etcd-ca");
        etcd.cert_file = pick(
            &self.etcd_cert,
            file.cert_file,
            &mut names.cert_file,
            "--etcd-cert",
        );
        etcd.key_file = pick(
            &self.etcd_key,
            file.key_file,
            &mut names.key_file,
            "--etcd-key",
        );
        etcd.username = pick(
            &self.etcd_user,
            file.username,
            &mut names.username,
            "--etcd-user",
        );
        etcd.password_file = pick(
            &self.etcd_password_file,
            file.password_file,
            &mut names.password_file,
            "--etcd-password-file",
        );
        etcd.names = names;
        Ok(Target {
            etcd,
            layout: Layout::new(&prefix),
            vip_range: file
                .vip_range
                .unwrap_or_else(hostmesh_config::default_vip_range),
            admin,
            timeout: self.timeout,
        })
    }
}

/// The flag's value if given (and `name` becomes the flag's), else the file's.
fn pick<T: Clone>(
    flag: &Option<T>,
    file: Option<T>,
    name: &mut &'static str,
    flag_name: &'static str,
) -> Option<T> {
    match flag {
        Some(v) => {
            *name = flag_name;
            Some(v.clone())
        }
        None => file,
    }
}

#[derive(Debug, Default)]
struct FileDefaults {
    endpoints: Option<Vec<String>>,
    prefix: Option<String>,
    admin: Option<String>,
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    username: Option<String>,
    password_file: Option<PathBuf>,
    vip_range: Option<Ipv4Net>,
    services_dir: Option<PathBuf>,
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
    // `""` means unset, as in the agent.
    let etcd_str = |key: &str| {
        etcd.and_then(|t| t.get(key))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
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
        ca_file: etcd_str("ca_file").map(PathBuf::from),
        cert_file: etcd_str("cert_file").map(PathBuf::from),
        key_file: etcd_str("key_file").map(PathBuf::from),
        username: etcd_str("username"),
        password_file: etcd_str("password_file").map(PathBuf::from),
        vip_range: section("dns")
            .and_then(|t| t.get("vip_range"))
            .and_then(|v| v.as_str())
            .and_then(|s| s.parse().ok()),
        services_dir: section("agent")
            .and_then(|t| t.get("services_dir"))
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from),
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
            let client = self.etcd.connect().await.map_err(|e| match e {
                // Bad local input: the user fixes an argument or a file.
                ConnectError::File { .. } | ConnectError::Settings(_) => {
                    CliError::Usage(e.to_string())
                }
                _ => CliError::Runtime(format!("etcd at {endpoints}: {e}")),
            })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        client: ClientArgs,
    }

    fn resolve(args: &[&str]) -> Target {
        let cli = Cli::try_parse_from([&["hostmesh"][..], args].concat()).expect("parses");
        cli.client.resolve().expect("resolves")
    }

    #[test]
    fn etcd_security_defaults_come_from_the_config_and_flags_override_each_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            "[etcd]\nendpoints = [\"https://e:2379\"]\nca_file = \"/c/ca.pem\"\n\
             cert_file = \"/c/host.pem\"\nkey_file = \"/c/host.key\"\n\
             username = \"hostmesh-host-a\"\npassword_file = \"/c/pw\"\n",
        )
        .expect("write");
        let config = config.to_string_lossy().into_owned();
        let t = resolve(&["--config", &config]);
        assert_eq!(t.etcd.ca_file.as_deref(), Some(Path::new("/c/ca.pem")));
        assert_eq!(t.etcd.key_file.as_deref(), Some(Path::new("/c/host.key")));
        assert_eq!(t.etcd.username.as_deref(), Some("hostmesh-host-a"));
        assert_eq!(t.etcd.names.password_file, "etcd.password_file");

        let t = resolve(&[
            "--config",
            &config,
            "--etcd-user",
            "ops",
            "--etcd-password-file",
            "/o/pw",
        ]);
        assert_eq!(t.etcd.username.as_deref(), Some("ops"));
        assert_eq!(t.etcd.password_file.as_deref(), Some(Path::new("/o/pw")));
        assert_eq!(t.etcd.names.password_file, "--etcd-password-file");
        // The TLS keys it did not override still come from the file.
        assert_eq!(t.etcd.cert_file.as_deref(), Some(Path::new("/c/host.pem")));
        assert_eq!(t.etcd.names.cert_file, "etcd.cert_file");
    }

    #[test]
    fn services_dir_comes_from_the_config_else_the_agents_default() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "[agent]\nservices_dir = \"/srv/s.d\"\n").expect("write");
        assert_eq!(
            services_dir(Some(&config)).expect("read"),
            Path::new("/srv/s.d")
        );
        std::fs::write(
            &config,
            "[agent]\nhost = \"a\"\n[tls]\nmode = \"disabled\"\n",
        )
        .expect("write");
        assert_eq!(
            services_dir(Some(&config)).expect("read"),
            Path::new(DEFAULT_SERVICES_DIR)
        );
        // The same default as the agent's own.
        let agent = hostmesh_config::AgentConfig::load(&config, []).expect("valid");
        assert_eq!(agent.agent.services_dir, Path::new(DEFAULT_SERVICES_DIR));
        assert!(services_dir(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn empty_strings_in_the_config_mean_unset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, "[etcd]\nca_file = \"\"\nusername = \"\"\n").expect("write");
        let t = resolve(&["--config", &config.to_string_lossy()]);
        assert!(t.etcd.ca_file.is_none() && t.etcd.username.is_none());
    }
}
