//! etcd's own gRPC proxy (`etcd grpc-proxy start`, Debian's 3.4), as fleets run it between their
//! agents and etcd: in the etcd host, in front of its member, on [`PROXY_PORT`].

use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use tempfile::TempDir;

use crate::etcd::{CLIENT_PORT, Etcd, START_TIMEOUT};
use crate::process::{Proc, run};
use crate::wait::try_wait_for;

/// The first proxy's client port ([`GrpcProxy::start`]).
pub const PROXY_PORT: u16 = 23790;

/// A running grpc-proxy. Killed on drop; its log is shown if the test panicked.
#[derive(Debug)]
pub struct GrpcProxy {
    endpoint: String,
    _dir: TempDir,
    log: PathBuf,
    _proc: Proc,
}

impl GrpcProxy {
    /// Starts a proxy in `etcd`'s host in front of it (plain HTTP) on [`PROXY_PORT`] and waits
    /// until it answers.
    #[track_caller]
    pub fn start(etcd: &Etcd) -> GrpcProxy {
        GrpcProxy::start_on(etcd, PROXY_PORT)
    }

    /// [`GrpcProxy::start`] on `port`, for a second proxy beside the first.
    #[track_caller]
    pub fn start_on(etcd: &Etcd, port: u16) -> GrpcProxy {
        let dir = crate::tmp::tempdir(&format!("grpc-proxy-{port}"));
        let log = dir.path().join("grpc-proxy.log");
        let host = etcd.host();
        let listen = format!("{}:{port}", host.addr());
        let mut cmd = host.cmd("etcd");
        cmd.args([
            "grpc-proxy",
            "start",
            &format!("--endpoints=127.0.0.1:{CLIENT_PORT}"),
            &format!("--listen-addr={listen}"),
        ]);
        let mut proc = Proc::spawn(cmd, "etcd grpc-proxy", &log);
        let endpoint = format!("http://{listen}");
        let up = try_wait_for(START_TIMEOUT, || {
            if let Some(st) = proc.try_exit() {
                panic!("etcd grpc-proxy exited ({st}):\n{}", proc.log_tail(50));
            }
            health(etcd, &endpoint).status.success().then_some(())
        });
        assert!(
            up.is_some(),
            "etcd grpc-proxy did not answer within {START_TIMEOUT:?}:\n{}",
            proc.log_tail(50)
        );
        GrpcProxy {
            endpoint,
            _dir: dir,
            log,
            _proc: proc,
        }
    }

    /// The URL agents use instead of etcd's, `http://198.18.0.x:23790`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The proxy's whole log so far.
    pub fn log(&self) -> String {
        crate::logs::tail(&self.log, usize::MAX)
    }
}

/// `etcdctl endpoint health` against `endpoint`, from the etcd host.
fn health(etcd: &Etcd, endpoint: &str) -> Output {
    let mut cmd = etcd.host().cmd("etcdctl");
    cmd.env("ETCDCTL_API", "3").args([
        "--endpoints",
        endpoint,
        "--dial-timeout",
        "1s",
        "--command-timeout",
        "2s",
        "endpoint",
        "health",
    ]);
    run(cmd, Duration::from_secs(10))
}
