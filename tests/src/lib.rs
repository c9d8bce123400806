//! End-to-end test harness for hostmesh: hosts as network namespaces on a private bridge, a real
//! etcd, the real `hostmesh` binary, and small backends, all torn down when a test ends, even when
//! it fails.
//!
//! A test builds a [`Net`], starts [`Etcd`] in it, adds hosts with [`Net::host`], runs an
//! [`Agent`] and [`Backend`]s on them, and breaks things: [`Host::cut_from`], [`Etcd::kill`],
//! [`Agent::signal`]. It waits for outcomes with [`wait_until`] / [`wait_for`], never with sleeps.
//! Declare the `Net` first so it is dropped last.

mod agent;
mod backend;
mod binary;
mod browser;
mod certs;
pub mod curl;
mod dns;
mod etcd;
mod etcd_proxy;
mod fault;
mod grpc;
mod logs;
mod net;
mod netns;
mod process;
pub mod raw_h2;
pub mod raw_http;
mod require;
mod servers;
mod tls;
mod tmp;
mod wait;

pub use agent::{ADMIN_LISTEN, Agent, AgentOpts, toml_str};
pub use backend::Backend;
pub use binary::{BIN_ENV, hostmesh_bin};
pub use browser::Browser;
pub use certs::{CertFiles, TestCa};
pub use curl::CurlError;
pub use dns::{DigAnswer, Dnsmasq, Record, parse_dig};
pub use etcd::{CLIENT_PORT, ETCD_HOST, Etcd, EtcdTls, PEER_PORT};
pub use etcd_proxy::{GrpcProxy, PROXY_PORT};
pub use fault::{FaultProxy, Mode};
pub use grpc::{GrpcApp, grpc_call};
pub use logs::tail as log_tail;
pub use net::{Host, Net};
pub use process::{Proc, Signal, run};
pub use raw_http::{RawConn, RawResponse};
pub use require::{TOOLS, require_root, require_tool, require_tools, which};
pub use servers::{
    BIG_FILE_LEN, ECHO_MAX_BODY, Nginx, RedisServer, curl_sha256, pseudo_random, redis_cli,
    sha256_hex, try_redis_cli,
};
pub use tls::{MeshCa, TRUST_DOMAIN, hostmesh_cmd, tls_files};
pub use wait::{POLL_INTERVAL, try_wait_for, wait_for, wait_until};
