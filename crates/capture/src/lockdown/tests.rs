#![allow(clippy::unwrap_used)]

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use hostmesh_config::spec::{InstanceSpec, Protocol};

use super::*;
use crate::test_netns::{Netns, sh};

const WAIT: Duration = Duration::from_secs(5);

fn spec(id: &str, target: &str, allow: &[&str]) -> InstanceSpec {
    InstanceSpec {
        service: "orders".into(),
        id: id.into(),
        port: 8080,
        target: target.parse().unwrap(),
        protocol: Protocol::Http,
        tags: Vec::new(),
        weight: 100,
        check: None,
        allow_direct: allow.iter().map(|a| a.parse().unwrap()).collect(),
        lockdown: true,
    }
}

fn tables() -> String {
    sh(&["nft", "list", "tables"])
}

#[tokio::test]
async fn missing_nft_says_what_to_do() {
    let lockdown = Lockdown::with_program(
        OsStr::new("/nonexistent/hostmesh-test/nft"),
        LockdownMetrics::default(),
    );
    let e = lockdown
        .set(&[spec("a", "127.0.0.1:8080", &[])], true)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "proxy.lockdown = true needs nft: install nftables, or set proxy.lockdown = false"
    );
    assert!(!lockdown.report().enabled);
    // Off: nothing was installed, so nothing to run.
    lockdown.set(&[], false).await.unwrap();
}

#[test]
fn the_table_replaces_a_leftover_follows_changes_and_goes_when_turned_off() {
    let ns = Netns::new();
    ns.run(|| async {
        // A crashed agent's table, with a port that is no longer wanted and a stray chain.
        sh_stdin(
            "table inet hostmesh_lockdown {\n\
             set locked_ports { type inet_service; elements = { 7070 } }\n\
             chain stale { }\n}\n",
        );
        let metrics = LockdownMetrics::default();
        let lockdown = Lockdown::new(metrics.clone());
        let specs = [
            spec("a", "127.0.0.1:8080", &["10.20.0.0/16", "fd00::/8"]),
            spec("b", "10.0.0.5:9090", &[]),
        ];
        lockdown.set(&specs, true).await.unwrap();
        let listed = sh(&["nft", "list", "table", "inet", "hostmesh_lockdown"]);
        assert!(
            !listed.contains("stale"),
            "leftover not replaced:\n{listed}"
        );
        assert!(!listed.contains("7070"), "{listed}");
        assert!(listed.contains("8080, 9090"), "{listed}");
        assert!(listed.contains("10.20.0.0/16"), "{listed}");
        assert!(listed.contains("fd00::/8"), "{listed}");
        assert!(listed.contains("reject with tcp reset"), "{listed}");
        assert_eq!(metrics.ports.get(), 2);
        let report = lockdown.report();
        assert!(report.enabled);
        assert_eq!(
            report.ports.iter().map(|p| p.port).collect::<Vec<_>>(),
            [8080, 9090]
        );

        // A reload without instance b: its port is no longer locked.
        lockdown.set(&specs[..1], true).await.unwrap();
        let listed = sh(&["nft", "list", "table", "inet", "hostmesh_lockdown"]);
        assert!(!listed.contains("9090"), "{listed}");
        assert_eq!(metrics.ports.get(), 1);

        // Capture's table is someone else's: untouched by lockdown, and the other way round.
        sh_stdin("table ip hostmesh { }\n");
        lockdown.set(&[], false).await.unwrap();
        let listed = tables();
        assert!(!listed.contains("hostmesh_lockdown"), "{listed}");
        assert!(listed.contains("table ip hostmesh"), "{listed}");
        assert_eq!(metrics.ports.get(), 0);
        assert!(!lockdown.report().enabled);

        // Lockdown off at a start deletes what an earlier run left.
        lockdown.set(&specs, true).await.unwrap();
        let fresh = Lockdown::new(LockdownMetrics::default());
        fresh.remove_leftover().await;
        assert!(!tables().contains("hostmesh_lockdown"));
        // Nothing left: nothing to do, no error.
        fresh.remove_leftover().await;
    });
}

#[test]
fn a_flushed_table_is_put_back() {
    let ns = Netns::new();
    ns.run(|| async {
        let metrics = LockdownMetrics::default();
        let lockdown = Lockdown::new(metrics.clone());
        lockdown
            .set(&[spec("a", "127.0.0.1:8080", &[])], true)
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let keeper = tokio::spawn(
            lockdown
                .clone()
                .keep(Duration::from_millis(50), cancel.clone()),
        );
        sh(&["nft", "flush", "ruleset"]);
        let deadline = tokio::time::Instant::now() + WAIT;
        while metrics.table_reinstalls.get() == 0 {
            assert!(tokio::time::Instant::now() < deadline, "not reinstalled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(tables().contains("hostmesh_lockdown"));
        assert_eq!(lockdown.report().problem, None);
        // Stopping the keeper (the agent stopping) leaves the table: fail closed.
        cancel.cancel();
        keeper.await.unwrap();
        assert!(tables().contains("hostmesh_lockdown"));
    });
}

/// Two namespaces on a veth pair: `app` (10.99.0.1) runs an app on 0.0.0.0, `peer`
/// (10.99.0.2) dials it directly.
#[test]
fn other_hosts_are_refused_this_host_and_allowed_networks_are_not() {
    let app = Netns::new();
    let peer = Netns::new();
    sh(&[
        "ip",
        "-n",
        app.name(),
        "link",
        "add",
        "v0",
        "type",
        "veth",
        "peer",
        "v1",
        "netns",
        peer.name(),
    ]);
    for (ns, dev, addr) in [(&app, "v0", "10.99.0.1/24"), (&peer, "v1", "10.99.0.2/24")] {
        sh(&["ip", "-n", ns.name(), "addr", "add", addr, "dev", dev]);
        sh(&["ip", "-n", ns.name(), "link", "set", dev, "up"]);
    }
    let listener: StdMutex<Option<TcpListener>> = StdMutex::new(None);
    let lockdown = Lockdown::new(LockdownMetrics::default());
    app.run(|| async {
        *listener.lock().unwrap() = Some(TcpListener::bind("0.0.0.0:8080").unwrap());
        lockdown
            .set(&[spec("a", "127.0.0.1:8080", &[])], true)
            .await
            .unwrap();
        // This host itself, on loopback and on its own address of the shared link.
        TcpStream::connect_timeout(&"127.0.0.1:8080".parse().unwrap(), WAIT).unwrap();
        TcpStream::connect_timeout(&"10.99.0.1:8080".parse().unwrap(), WAIT).unwrap();
    });
    let dial = || {
        let mut result = None;
        peer.run(|| async {
            let addr: SocketAddr = "10.99.0.1:8080".parse().unwrap();
            result = Some(TcpStream::connect_timeout(&addr, WAIT).map(drop));
        });
        result.unwrap()
    };
    // Another host: refused at once (a reset), not left to time out.
    let e = dial().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused, "{e}");
    // Another port of the app host stays open to it: only locked ports are judged.
    let mut other = None;
    app.run(|| async {
        other = Some(TcpListener::bind("0.0.0.0:8081").unwrap());
    });
    peer.run(|| async {
        TcpStream::connect_timeout(&"10.99.0.1:8081".parse().unwrap(), WAIT).unwrap();
    });
    // With the peer's network in allow_direct it gets through.
    app.run(|| async {
        lockdown
            .set(&[spec("a", "127.0.0.1:8080", &["10.99.0.0/30"])], true)
            .await
            .unwrap();
    });
    dial().unwrap();
    // Lockdown off: open again.
    app.run(|| async {
        lockdown.set(&[], false).await.unwrap();
    });
    dial().unwrap();
    drop(listener);
}

/// Applies a raw batch (a leftover to replace); must be called inside the namespace.
fn sh_stdin(batch: &str) {
    nft_cmd::apply_blocking(OsStr::new("nft"), batch).unwrap();
}
