//! Authenticating to etcd with a user and password.
//!
//! etcd-client keeps the credentials and the token in state shared by every clone of a
//! [`Client`]; [`Login::attempt`] sets both at once, and from then on the client re-authenticates
//! by itself whenever etcd calls the token invalid (see the parent module's docs). It is a step
//! of its own, not part of building the client, because authenticating needs etcd: an agent that
//! starts while etcd is down must still come up and serve its saved catalog, so it builds the
//! client, tries to log in, and keeps retrying in the background ([`Login::retry`]).

use std::path::PathBuf;

use etcd_client::{Client, Error};
use tokio_util::sync::CancellationToken;

use super::SettingNames;

/// A user and its password, read from the password file.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub password_file: Option<PathBuf>,
    pub names: SettingNames,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the password.
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// etcd says the user or the password is wrong: fix the settings; retrying won't help.
    #[error(
        "etcd refused the credentials of user {user:?} ({username}, password from {password_file} {path}): {message}"
    )]
    Refused {
        user: String,
        username: &'static str,
        password_file: &'static str,
        path: String,
        message: String,
    },
    /// etcd has authentication disabled: requests work without a token meanwhile.
    #[error("etcd has authentication disabled, so the user {0:?} is not used until it is enabled")]
    NotEnabled(String),
    /// etcd could not be asked: retry later.
    #[error("authenticating to etcd as {user:?}: {error}")]
    Unavailable { user: String, error: Error },
}

/// Logs a client in; see the module docs.
#[derive(Debug, Clone)]
pub struct Login {
    credentials: Credentials,
}

impl Login {
    pub fn new(credentials: Credentials) -> Self {
        Login { credentials }
    }

    pub fn user(&self) -> &str {
        &self.credentials.user
    }

    /// Authenticates once; on success `client` and all its clones carry the token and refresh it
    /// when etcd invalidates it.
    pub async fn attempt(&self, client: &mut Client) -> Result<(), AuthError> {
        let c = &self.credentials;
        match client
            .update_user(Some((c.user.clone(), c.password.clone())))
            .await
        {
            Ok(()) => Ok(()),
            Err(error) => Err(self.classify(error)),
        }
    }

    fn classify(&self, error: Error) -> AuthError {
        let c = &self.credentials;
        let user = c.user.clone();
        let Error::GRpcStatus(status) = &error else {
            return AuthError::Unavailable { user, error };
        };
        // etcd 3.4-3.6: ErrGRPCAuthFailed and ErrGRPCAuthNotEnabled, matched by message since
        // both share their gRPC code with unrelated errors.
        let message = status.message();
        if message.contains("authentication failed") {
            AuthError::Refused {
                user,
                username: c.names.username,
                password_file: c.names.password_file,
                path: c
                    .password_file
                    .as_ref()
                    .map_or_else(String::new, |p| p.display().to_string()),
                message: message.to_owned(),
            }
        } else if message.contains("authentication is not enabled") {
            AuthError::NotEnabled(user)
        } else {
            AuthError::Unavailable { user, error }
        }
    }

    /// Retries [`Login::attempt`] with backoff until it succeeds or `cancel`: for an agent that
    /// could not log in at start (etcd down, or auth not enabled yet, or a password being
    /// rotated). Each new kind of failure is logged once.
    pub async fn retry(self, mut client: Client, cancel: CancellationToken) {
        let mut backoff = super::backoff();
        let mut last = String::new();
        loop {
            match self.attempt(&mut client).await {
                Ok(()) => {
                    tracing::info!(user = self.user(), "authenticated to etcd");
                    return;
                }
                Err(e) => {
                    let text = e.to_string();
                    if text != last {
                        match e {
                            AuthError::Refused { .. } => tracing::error!("{text}; retrying"),
                            _ => tracing::warn!("{text}; retrying"),
                        }
                    }
                    last = text;
                }
            }
            let delay = backoff.next().unwrap_or(std::time::Duration::from_secs(3));
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}
