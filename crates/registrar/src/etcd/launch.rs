//! The command line of a private etcd member: `hostmesh dev` starts a single one, and so do the
//! end-to-end harness and the catalog benchmark; the fleet benchmark starts a cluster of three.
//! One place, so that a flag etcd 3.4 needs (or deprecates) is changed once.

use std::ffi::OsString;
use std::path::Path;

/// Where an etcd member listens: `client` (one URL or several, comma-separated) is where
/// clients reach it and `advertise` the URL it tells them; `peer` is its own peer URL.
#[derive(Debug, Clone)]
pub struct Member<'a> {
    pub name: &'a str,
    pub data_dir: &'a Path,
    pub client: &'a str,
    pub advertise: &'a str,
    pub peer: &'a str,
}

impl Member<'_> {
    /// The arguments after `etcd` for a cluster of this member alone. Callers add their own
    /// (TLS files, a backend quota).
    pub fn args(&self) -> Vec<OsString> {
        self.args_in(
            &format!("{}={}", self.name, self.peer),
            &format!("hostmesh-{}", self.name),
        )
    }

    /// The arguments after `etcd` for one member of a new cluster: `initial_cluster` names every
    /// member (`a=http://…,b=http://…`) and `token` is the same on all of them.
    pub fn args_in(&self, initial_cluster: &str, token: &str) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--name".into(), self.name.into(), "--data-dir".into()];
        args.push(self.data_dir.into());
        for (flag, value) in [
            ("--listen-client-urls", self.client.to_owned()),
            ("--advertise-client-urls", self.advertise.to_owned()),
            ("--listen-peer-urls", self.peer.to_owned()),
            ("--initial-advertise-peer-urls", self.peer.to_owned()),
            // Ignored when the data dir already exists (a restart), as it should be.
            ("--initial-cluster", initial_cluster.to_owned()),
            ("--initial-cluster-state", "new".to_owned()),
            ("--initial-cluster-token", token.to_owned()),
            // zap instead of 3.4's deprecated default logger, which warns about itself.
            ("--logger", "zap".to_owned()),
            ("--log-outputs", "stderr".to_owned()),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_member_names_itself_in_its_initial_cluster() {
        let args = Member {
            name: "dev",
            data_dir: Path::new("/tmp/d"),
            client: "http://127.0.0.1:1,http://10.0.0.1:1",
            advertise: "http://10.0.0.1:1",
            peer: "http://127.0.0.1:2",
        }
        .args();
        let text: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("?")).collect();
        let value = |flag: &str| text[text.iter().position(|a| *a == flag).expect(flag) + 1];
        assert_eq!(value("--initial-cluster"), "dev=http://127.0.0.1:2");
        assert_eq!(value("--data-dir"), "/tmp/d");
        assert_eq!(value("--advertise-client-urls"), "http://10.0.0.1:1");
        assert_eq!(value("--listen-peer-urls"), "http://127.0.0.1:2");
    }

    #[test]
    fn a_cluster_member_names_every_member_and_the_shared_token() {
        let args = Member {
            name: "m1",
            data_dir: Path::new("/tmp/m1"),
            client: "http://127.0.0.1:1",
            advertise: "http://127.0.0.1:1",
            peer: "http://127.0.0.1:2",
        }
        .args_in("m0=http://127.0.0.1:4,m1=http://127.0.0.1:2", "fleet");
        let text: Vec<&str> = args.iter().map(|a| a.to_str().unwrap_or("?")).collect();
        let value = |flag: &str| text[text.iter().position(|a| *a == flag).expect(flag) + 1];
        assert_eq!(
            value("--initial-cluster"),
            "m0=http://127.0.0.1:4,m1=http://127.0.0.1:2"
        );
        assert_eq!(value("--initial-cluster-token"), "fleet");
        assert_eq!(value("--name"), "m1");
    }
}
