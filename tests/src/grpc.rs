//! gRPC from a test's point of view: a Python grpcio app (h2c) inside a host and one-shot calls
//! from another. grpcio comes from PyPI (`.ci/run` installs it).

use std::time::Duration;

use tempfile::TempDir;

use crate::net::Host;
use crate::process::Proc;
use crate::wait::try_wait_for;

const APP: &str = include_str!("grpc_app.py");
const CLIENT: &str = include_str!("grpc_client.py");

/// A gRPC app on `0.0.0.0:port` in a host; killed on drop.
#[derive(Debug)]
pub struct GrpcApp {
    _dir: TempDir,
    _proc: Proc,
}

impl GrpcApp {
    #[track_caller]
    pub fn start(host: &Host, port: u16) -> GrpcApp {
        let dir = crate::tmp::tempdir(&format!("grpc-{}-{port}", host.name()));
        let script = dir.path().join("grpc_app.py");
        std::fs::write(&script, APP)
            .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
        let mut cmd = host.cmd("python3");
        cmd.arg("-u")
            .arg(&script)
            .arg(dir.path())
            .arg("0.0.0.0")
            .arg(port.to_string());
        let what = format!("grpc app :{port} on {}", host.name());
        let mut proc = Proc::spawn(cmd, &what, &dir.path().join("grpc.log"));
        let ready = dir.path().join("ready");
        let up = try_wait_for(Duration::from_secs(15), || {
            if let Some(st) = proc.try_exit() {
                panic!(
                    "{what} exited ({st}); is grpcio installed (python3 -m pip install grpcio)?\n{}",
                    proc.log_tail(20)
                );
            }
            ready.exists().then_some(())
        });
        assert!(
            up.is_some(),
            "{what} did not start within 15s:\n{}",
            proc.log_tail(20)
        );
        GrpcApp {
            _dir: dir,
            _proc: proc,
        }
    }
}

/// One call from `host` to `target` (`name:port`): "<STATUS> <reply or details> error=<x-hostmesh-error>".
pub fn grpc_call(
    host: &Host,
    target: &str,
    payload: &str,
    timeout: Duration,
    metadata: &[&str],
) -> String {
    let dir = crate::tmp::tempdir("grpc-client");
    let script = dir.path().join("grpc_client.py");
    std::fs::write(&script, CLIENT).unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
    let script = script.to_string_lossy().into_owned();
    let timeout = format!("{}", timeout.as_secs_f64());
    let mut args = vec![script.as_str(), target, payload, timeout.as_str()];
    args.extend_from_slice(metadata);
    let out = host.run("python3", &args);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        if out.status.success() {
            String::new()
        } else {
            format!(" (stderr: {})", String::from_utf8_lossy(&out.stderr))
        }
    )
}
