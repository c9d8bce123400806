//! A throw-away certificate authority made with the `openssl` command: a CA, server certificates
//! for etcd (with IP SANs) and client certificates, as PEM files in a temp dir.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::process::run;

/// A certificate and its private key on disk.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA; its files live as long as it does.
#[derive(Debug)]
pub struct TestCa {
    dir: TempDir,
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

impl TestCa {
    /// Makes a CA (EC P-256, valid for two days). Panics naming `openssl` when it is missing.
    #[track_caller]
    pub fn new() -> TestCa {
        crate::require::require_tool("openssl", "openssl");
        let ca = TestCa {
            dir: crate::tmp::tempdir("ca"),
        };
        let (cert, key) = (ca.cert(), ca.dir.path().join("ca.key"));
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=hostmesh-test-ca",
            "-keyout",
            &s(&key),
            "-out",
            &s(&cert),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        ca
    }

    /// The CA certificate (what clients and servers trust).
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A server certificate for `ips` (etcd's listen addresses).
    #[track_caller]
    pub fn server(&self, name: &str, ips: &[Ipv4Addr]) -> CertFiles {
        let sans: Vec<String> = ips.iter().map(|ip| format!("IP:{ip}")).collect();
        self.issue(
            name,
            &format!(
                "subjectAltName={}\nextendedKeyUsage=serverAuth\n",
                sans.join(",")
            ),
        )
    }

    /// A client certificate with common name `cn`. (With etcd auth enabled, etcd takes a client
    /// certificate's CN as the user name of requests that carry no token.)
    #[track_caller]
    pub fn client(&self, cn: &str) -> CertFiles {
        self.issue(cn, "extendedKeyUsage=clientAuth\n")
    }

    #[track_caller]
    fn issue(&self, cn: &str, extensions: &str) -> CertFiles {
        let dir = self.dir.path();
        let files = CertFiles {
            cert: dir.join(format!("{cn}.pem")),
            key: dir.join(format!("{cn}.key")),
        };
        let csr = dir.join(format!("{cn}.csr"));
        let ext = dir.join(format!("{cn}.ext"));
        std::fs::write(&ext, extensions)
            .unwrap_or_else(|e| panic!("writing {}: {e}", ext.display()));
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={cn}"),
            "-keyout",
            &s(&files.key),
            "-out",
            &s(&csr),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &s(&csr),
            "-CA",
            &s(&self.cert()),
            "-CAkey",
            &s(&dir.join("ca.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &s(&ext),
            "-out",
            &s(&files.cert),
        ]);
        files
    }
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[track_caller]
fn openssl(args: &[&str]) {
    let mut cmd = Command::new("openssl");
    cmd.args(args);
    let out = run(cmd, Duration::from_secs(30));
    assert!(
        out.status.success(),
        "`openssl {}` failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
