//! Connecting to etcd: endpoints, optional TLS and auth, timeouts, and the backoff every loop
//! that talks to etcd uses between attempts.
//!
//! # Auth
//! etcd's simple tokens live in the server's memory: a restart of etcd (or the token TTL, five
//! minutes by default) invalidates them. Every client here has etcd-client's automatic token
//! refresh on: a unary request refused with "invalid auth token" authenticates again and is
//! retried once. Streams are covered by the loops that reopen them: the catalog lists (a unary
//! request, so the token is fresh) before it watches again, and etcd 3.4 does not check tokens on
//! lease keep-alives. See [`auth`] for the agent's start-up while etcd is unreachable.

pub mod auth;
pub mod endpoints;
mod files;
pub mod launch;

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio_util::sync::CancellationToken;

pub use auth::{AuthError, Credentials, Login};

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
    /// How the settings are spelled where they came from (`etcd.ca_file` in the agent config,
    /// `--etcd-ca` on the command line), for error messages.
    pub names: SettingNames,
}

/// The names of the TLS and auth settings as the user wrote them.
#[derive(Debug, Clone, Copy)]
pub struct SettingNames {
    pub ca_file: &'static str,
    pub cert_file: &'static str,
    pub key_file: &'static str,
    pub username: &'static str,
    pub password_file: &'static str,
}

impl SettingNames {
    /// The agent config's keys.
    pub const CONFIG: SettingNames = SettingNames {
        ca_file: "etcd.ca_file",
        cert_file: "etcd.cert_file",
        key_file: "etcd.key_file",
        username: "etcd.username",
        password_file: "etcd.password_file",
    };
}

impl Default for SettingNames {
    fn default() -> Self {
        SettingNames::CONFIG
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A local file named in the config could not be read or holds the wrong thing: fix the
    /// config, retrying won't help.
    #[error("{what} {path}: {reason}")]
    File {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The settings contradict each other (e.g. a CA with only `http://` endpoints).
    #[error("{0}")]
    Settings(String),
    /// etcd refused the credentials, or could not be asked.
    #[error(transparent)]
    Auth(#[from] AuthError),
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

    /// Builds a client and, when a user is configured, authenticates once: for the command-line
    /// tools, which fail at once when etcd is down or refuses the credentials.
    pub async fn connect(&self) -> Result<Client, ConnectError> {
        let (mut client, login) = self.open().await?;
        if let Some(login) = login {
            match login.attempt(&mut client).await {
                // Requests work without a token then; nothing to refuse.
                Ok(()) | Err(AuthError::NotEnabled(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(client)
    }

    /// Builds a client without any round trip (the channel connects lazily), so this succeeds
    /// while etcd is down; local files are read and checked here. When a user is configured the
    /// client is not authenticated yet: the returned [`Login`] does that (the agent tries it at
    /// start and keeps retrying in the background while etcd is unreachable).
    pub async fn open(&self) -> Result<(Client, Option<Login>), ConnectError> {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(self.timeout)
            .with_timeout(self.timeout);
        if self.endpoints.len() == 1 {
            // HTTP/2 pings find a dead connection (a silent partition) within seconds, where TCP
            // alone would wait for minutes. Only with one endpoint: with several, the client
            // holds a connection to each and most carry no stream, and a gRPC server takes pings
            // on such a connection, or more often than its minimum (etcd grpc-proxy: 5 minutes)
            // without writing in between, as abuse: "too many pings", GOAWAY. With three
            // proxies, 300 agents lost 76 leases and re-listed 207 times in 30 s that way
            // (bench/fleet). Several endpoints are probed instead (`endpoints`), and one that
            // stops connecting is dropped with its connection.
            options = options
                .with_keep_alive(Duration::from_secs(2), Duration::from_secs(3))
                .with_keep_alive_while_idle(true);
        }
        options = options
            // A member cut off from the majority must not serve us a frozen view.
            .with_require_leader(true)
            // Tokens die with an etcd restart; see the module docs.
            .with_auto_token_refresh(true);
        if let Some(tls) = files::tls(self)? {
            options = options.with_tls(tls);
        }
        let login = match &self.username {
            Some(user) => Some(Login::new(Credentials {
                user: user.clone(),
                password: files::password(self)?,
                password_file: self.password_file.clone(),
                names: self.names,
            })),
            None => None,
        };
        // No user in the options: etcd-client would authenticate inside `connect` and fail
        // while etcd is down. The login sets the user on this client's shared credentials.
        let client = Client::connect(&self.endpoints, Some(options)).await?;
        Ok((client, login))
    }

    /// [`open`](Self::open), then spawns [`endpoints::keep_live_in_rotation`] for this client and
    /// these endpoints until `cancel`. A client with several endpoints needs that task (without
    /// it, requests keep going to an endpoint that refuses connections), so everything that runs
    /// the registrar opens its client here: the agent and bench/fleet's simulated agents, which
    /// would otherwise each repeat both steps. Must be called within a Tokio runtime.
    pub async fn open_with_probes(
        &self,
        cancel: CancellationToken,
    ) -> Result<(Client, Option<Login>), ConnectError> {
        let (client, login) = self.open().await?;
        tokio::spawn(endpoints::keep_live_in_rotation(
            client.clone(),
            self.endpoints.clone(),
            cancel,
        ));
        Ok((client, login))
    }
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
