//! Mesh certificates for tests: a CA made with the real `hostmesh ca init`, host files made with
//! `hostmesh ca issue`, and deliberately wrong host certificates (expired, two URI SANs, another
//! host's identity, …) made with the same library code, for showing that they are refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use hostmesh_tls::HostIdentity;
use hostmesh_tls::issue::{Ca, host_params};
use tempfile::TempDir;

use crate::binary::hostmesh_bin;

/// The trust domain test CAs use (the agent's default).
pub const TRUST_DOMAIN: &str = "hostmesh.local";

/// A mesh CA in a temporary directory.
#[derive(Debug)]
pub struct MeshCa {
    dir: TempDir,
}

/// Runs the real `hostmesh` with `args`.
pub fn hostmesh_cmd(args: &[&str]) -> Output {
    Command::new(hostmesh_bin())
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running hostmesh {args:?}: {e}"))
}

impl MeshCa {
    /// `hostmesh ca init --dir <tmp>/ca --trust-domain TRUST_DOMAIN`.
    pub fn new() -> MeshCa {
        let dir = crate::tmp::tempdir("mesh-ca");
        let ca = MeshCa { dir };
        let out = hostmesh_cmd(&[
            "ca",
            "init",
            "--dir",
            ca.path_str(),
            "--trust-domain",
            TRUST_DOMAIN,
        ]);
        assert!(
            out.status.success(),
            "ca init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ca
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path_str(&self) -> &str {
        self.dir.path().to_str().expect("utf-8 temp path")
    }

    /// `hostmesh ca issue --host HOST --out OUT --force`: OUT/host.pem, host.key, ca.pem.
    pub fn issue(&self, host: &str, out: &Path) {
        let out_s = out.to_str().expect("utf-8 path");
        let res = hostmesh_cmd(&[
            "ca",
            "issue",
            "--dir",
            self.path_str(),
            "--host",
            host,
            "--out",
            out_s,
            "--force",
        ]);
        assert!(
            res.status.success(),
            "ca issue: {}",
            String::from_utf8_lossy(&res.stderr)
        );
    }

    /// Writes a host certificate for `host` into OUT (host.pem, host.key, ca.pem) after `tweak`
    /// changed its parameters: the way to make certificates `ca issue` never would.
    pub fn issue_custom(
        &self,
        host: &str,
        out: &Path,
        tweak: impl FnOnce(&mut rcgen::CertificateParams),
    ) {
        let read = |n: &str| {
            std::fs::read_to_string(self.dir().join(n)).unwrap_or_else(|e| panic!("{n}: {e}"))
        };
        let ca_pem = read("ca.pem");
        let ca = Ca::from_pem(&ca_pem, &read("ca.key")).expect("the test CA loads");
        let identity = HostIdentity::new(TRUST_DOMAIN, host).expect("a valid identity");
        let mut params =
            host_params(&identity, Duration::from_secs(365 * 86_400)).expect("host params");
        tweak(&mut params);
        let issued = ca.sign(&params).expect("signing");
        std::fs::create_dir_all(out).expect("out dir");
        for (name, text) in [
            ("host.pem", &issued.cert_pem),
            ("host.key", &issued.key_pem),
            ("ca.pem", &ca_pem),
        ] {
            std::fs::write(out.join(name), text).expect("writing a test certificate");
        }
    }
}

impl Default for MeshCa {
    fn default() -> Self {
        MeshCa::new()
    }
}

/// The files `ca issue` writes into `dir`.
pub fn tls_files(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("ca.pem"),
        dir.join("host.pem"),
        dir.join("host.key"),
    )
}
