//! Start-up against etcd: the client and its login, the host-name claim, and the registrar's
//! settings.

use std::net::IpAddr;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use hostmesh_registrar::etcd::{AuthError, EtcdOptions, SettingNames};
use hostmesh_registrar::keys::Layout;
use hostmesh_registrar::record::HostInfo;
use hostmesh_registrar::register::{ClaimError, Registrar, RegistrarConfig};

use hostmesh_config::AgentConfig;

use super::{CLAIM_WAIT, RunError};

/// Builds the etcd client (keeping endpoints that refuse connections out of its rotation,
/// `etcd::endpoints`) and logs in when `etcd.username` is set. Credentials etcd refuses stop
/// the start (naming the settings); an etcd that does not answer within [`CLAIM_WAIT`] does not:
/// the login carries on in the background while the agent serves its saved catalog.
pub(super) async fn connect_etcd(
    config: &AgentConfig,
    cancel: &CancellationToken,
) -> Result<etcd_client::Client, RunError> {
    let (mut client, login) = etcd_options(config)
        .open_with_probes(cancel.clone())
        .await?;
    let Some(login) = login else {
        return Ok(client);
    };
    match tokio::time::timeout(CLAIM_WAIT, login.attempt(&mut client)).await {
        Ok(Ok(())) => {
            tracing::info!(user = login.user(), "authenticated to etcd");
            return Ok(client);
        }
        Ok(Err(e @ AuthError::Refused { .. })) => return Err(RunError::EtcdLogin(e)),
        Ok(Err(e)) => tracing::warn!("{e}; retrying in the background"),
        Err(_) => tracing::warn!(
            user = login.user(),
            "etcd did not answer the login within {CLAIM_WAIT:?}; retrying in the background"
        ),
    }
    tokio::spawn(login.retry(client.clone(), cancel.clone()));
    Ok(client)
}

/// Refuses to start when another live agent holds this host's name; with etcd unreachable, starts
/// anyway (the registrar checks again before every registration).
pub(super) async fn claim_host_name(registrar: &mut Registrar) -> Result<(), RunError> {
    match tokio::time::timeout(CLAIM_WAIT, registrar.claim()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e @ ClaimError::Conflict { .. })) => Err(RunError::HostNameTaken(e)),
        Ok(Err(e)) => {
            tracing::warn!("could not check the host name in etcd yet: {e}");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(
                "etcd did not answer within {CLAIM_WAIT:?}; serving the saved catalog meanwhile"
            );
            Ok(())
        }
    }
}

pub(super) fn registrar_config(
    config: &AgentConfig,
    advertise: IpAddr,
    layout: Layout,
) -> RegistrarConfig {
    RegistrarConfig {
        host: config.agent.host.clone(),
        info: HostInfo {
            address: advertise,
            inbound_port: config.proxy.inbound_listen.port(),
            zone: config.agent.zone.clone(),
            version: crate::VERSION.to_owned(),
        },
        layout,
        lease_ttl: config.etcd.lease_ttl,
        vip_range: config.dns.vip_range,
        data_dir: config.agent.data_dir.clone(),
        anti_entropy_interval: Duration::from_secs(30),
    }
}

pub fn etcd_options(config: &AgentConfig) -> EtcdOptions {
    EtcdOptions {
        endpoints: config.etcd.endpoints.clone(),
        ca_file: config.etcd.ca_file.clone(),
        cert_file: config.etcd.cert_file.clone(),
        key_file: config.etcd.key_file.clone(),
        username: config.etcd.username.clone(),
        password_file: config.etcd.password_file.clone(),
        timeout: Duration::from_secs(5),
        names: SettingNames::CONFIG,
    }
}
