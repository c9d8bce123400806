//! Connecting to etcd: endpoints, optional TLS and auth, timeouts, and the backoff every loop
//! that talks to etcd uses between attempts.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};

/// How to reach etcd (the agent's `[etcd]` section minus the layout).
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    /// Bounds each connection attempt and each request.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A local file named in the config could not be read: fix the config, retrying won't help.
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// etcd could not be reached or refused us: retry later.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

impl EtcdOptions {
    pub fn with_endpoints(endpoints: Vec<String>) -> Self {
        EtcdOptions {
            endpoints,
            timeout: Duration::from_secs(5),
            ..Default::default()
        }
    }

    /// Builds a client. The channel connects lazily, so this succeeds while etcd is down unless
    /// auth is configured (which needs a round trip for the token); callers find out on first use.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout)
            // HTTP/2 pings find a dead connection (a silent partition) within seconds, where TCP
            // alone would wait for minutes.
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
            .with_keep_alive_while_idle(true)
            // A member cut off from the majority must not serve us a frozen view.
            .with_require_leader(true);
        if let Some(tls) = self.tls()? {
            options = options.with_tls(tls);
        }
        if let Some(user) = &self.username {
            let password = match &self.password_file {
                Some(path) => read(path, "etcd password_file")?.trim_end().to_owned(),
                None => String::new(),
            };
            options = options.with_user(user.clone(), password);
        }
        Ok(Client::connect(&self.endpoints, Some(options)).await?)
    }

    fn tls(&self) -> Result<Option<TlsOptions>, ConnectError> {
        let uses_https = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if !uses_https && self.ca_file.is_none() && self.cert_file.is_none() {
            return Ok(None);
        }
        let mut tls = TlsOptions::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca, "etcd ca_file")?));
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            tls = tls.identity(Identity::from_pem(
                read(cert, "etcd cert_file")?,
                read(key, "etcd key_file")?,
            ));
        }
        Ok(Some(tls))
    }
}

fn read(path: &PathBuf, what: &'static str) -> Result<String, ConnectError> {
    std::fs::read_to_string(path).map_err(|source| ConnectError::File {
        what,
        path: path.clone(),
        source,
    })
}

/// The backoff between attempts of any loop that talks to etcd: quick at first so a blip costs
/// little, capped so a long outage costs one attempt every few seconds, jittered so a fleet of
/// agents does not reconnect in lockstep when etcd returns.
pub fn backoff() -> backon::ExponentialBackoff {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(3))
        .with_jitter()
        .without_max_times()
        .build()
}
