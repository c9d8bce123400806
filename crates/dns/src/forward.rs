//! Forwarding names outside the mesh domain to the upstream resolvers with hickory-resolver,
//! and turning its result back into an answer for the client.
//!
//! The resolver does the upstream work we must get right: it tries the servers in turn, retries
//! truncated UDP answers over TCP (so a large answer arrives whole and we can hand it to the
//! client over TCP), and its small cache counts TTLs down, so nothing is served past the
//! upstream's TTL. `/etc/hosts` is not consulted: the client's own resolver already did.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::{Resolver, TokioResolver};

use super::metrics::Outcome;
use super::wire::{MAX_UDP_PAYLOAD, Request};

/// One try against one server. Stub resolvers give up after 5 s (glibc's default), so two
/// tries must fit well inside that.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const ATTEMPTS: usize = 2;
/// The whole forwarded query, all servers and retries included: past it the client gets
/// SERVFAIL rather than silence, and the in-flight slot is freed.
pub(crate) const FORWARD_DEADLINE: Duration = Duration::from_secs(4);
/// Responses kept (with their TTLs counting down). Small: the point is absorbing bursts of the
/// same name, not being a caching resolver.
const CACHE_ENTRIES: u64 = 1024;

#[derive(Clone)]
pub(crate) struct Forwarder {
    resolver: TokioResolver,
    servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("servers", &self.servers)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    /// `servers` must not be empty (an empty list means "refuse", decided by the caller).
    pub(crate) fn new(servers: Vec<SocketAddr>) -> Result<Forwarder, NetError> {
        let name_servers = servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        let mut options = ResolverOpts::default();
        options.timeout = ATTEMPT_TIMEOUT;
        options.attempts = ATTEMPTS;
        options.cache_size = CACHE_ENTRIES;
        options.use_hosts_file = ResolveHosts::Never;
        options.edns0 = true;
        options.edns_payload_len = MAX_UDP_PAYLOAD;
        // CNAME chains stay in the answer, as the client expects from a recursive server.
        options.preserve_intermediates = true;
        let resolver = Resolver::builder_with_config(
            ResolverConfig::from_name_servers(name_servers),
            TokioRuntimeProvider::default(),
        )
        .with_options(options)
        .build()?;
        Ok(Forwarder { resolver, servers })
    }

    pub(crate) fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// Asks upstream; `Err` on failure or after [`FORWARD_DEADLINE`].
    pub(crate) async fn lookup(&self, req: &Request) -> Result<Lookup, NetError> {
        let mut name = req.query.name().clone();
        name.set_fqdn(true);
        match tokio::time::timeout(
            FORWARD_DEADLINE,
            self.resolver.lookup(name, req.query.query_type()),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(NetError::Timeout),
        }
    }
}

/// The client's answer for an upstream result: records relayed as NOERROR; NXDOMAIN and NODATA
/// relayed with the upstream's SOA (so the client caches the negative answer as long as the
/// upstream allows); any failure becomes SERVFAIL.
pub(crate) fn relay(req: &Request, result: Result<Lookup, NetError>) -> (Message, Outcome) {
    let respond = |rcode| {
        let mut m = req.response(rcode);
        m.metadata.recursion_available = true;
        m
    };
    match result {
        Ok(lookup) => {
            let mut m = respond(ResponseCode::NoError);
            m.add_answers(lookup.answers().iter().cloned());
            m.add_additionals(
                lookup
                    .additionals()
                    .iter()
                    .filter(|r| !matches!(r.record_type(), RecordType::OPT | RecordType::TSIG))
                    .cloned(),
            );
            (m, Outcome::Forwarded)
        }
        Err(NetError::Dns(DnsError::NoRecordsFound(no_records)))
            if matches!(
                no_records.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            let mut m = respond(no_records.response_code);
            if let Some(soa) = no_records.soa {
                m.add_authority(soa.into_record_of_rdata());
            }
            (m, Outcome::Forwarded)
        }
        Err(error) => {
            tracing::debug!(name = %req.query.name(), %error, "dns: upstream failed");
            (respond(ResponseCode::ServFail), Outcome::UpstreamError)
        }
    }
}
