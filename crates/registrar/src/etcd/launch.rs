//! The command line of a private, single-member etcd: `hostmesh dev` starts one, and so do the
//! end-to-end harness and the catalog benchmark. One place, so that a flag etcd 3.4 needs (or
//! deprecates) is changed once.

use std::ffi::OsString;
use std::path::Path;

/// Where a single-member etcd listens: `client` (one URL or several, comma-separated) is where
/// clients reach it and `advertise` the URL it tells them; `peer` is its own peer URL.
#[derive(Debug, Clone)]
pub struct SingleMember<'a> {
    pub name: &'a str,
    pub data_dir: &'a Path,
    pub client: &'a str,
    pub advertise: &'a str,
    pub peer: &'a str,
}

impl SingleMember<'_> {
    /// The arguments after `etcd`. Callers add their own (TLS files, a backend quota).
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--name".into(), self.name.into(), "--data-dir".into()];
        args.push(self.data_dir.into());
        for (flag, value) in [
            ("--listen-client-urls", self.client.to_owned()),
            ("--advertise-client-urls", self.advertise.to_owned()),
            ("--listen-peer-urls", self.peer.to_owned()),
            ("--initial-advertise-peer-urls", self.peer.to_owned()),
            // Ignored when the data dir already exists (a restart), as it should be.
            ("--initial-cluster", format!("{}={}", self.name, self.peer)),
            ("--initial-cluster-state", "new".to_owned()),
            ("--initial-cluster-token", format!("hostmesh-{}", self.name)),
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
        let args = SingleMember {
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
}
