//! A catalog in etcd as a fleet would have registered it: `services` services with 3 instances
//! each, spread over `services / 10` hosts, each with its VIP (in 127.77.0.0/16, the default
//! `dns.vip_range`).

use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions, Txn, TxnOp};

/// What [`fill_catalog`] wrote.
#[derive(Debug, Clone, Copy)]
pub struct Filled {
    pub services: usize,
    pub hosts: usize,
    pub keys: usize,
    /// Every key but the VIPs is on this lease (an hour long), as a host's keys would be.
    pub lease: i64,
    pub took: Duration,
}

/// Writes the catalog in transactions of 100 puts (under etcd's default `--max-txn-ops` of 128).
pub async fn fill_catalog(client: &Client, services: usize) -> Result<Filled, etcd_client::Error> {
    let started = Instant::now();
    let hosts = (services / 10).max(3);
    let mut kv = client.kv_client();
    let lease = client.lease_client().grant(3600, None).await?.id();
    let on_lease = || Some(PutOptions::new().with_lease(lease));
    let mut ops = Vec::new();
    for h in 0..hosts {
        ops.push(TxnOp::put(
            format!("/hostmesh/v1/hosts/h{h}/info"),
            format!(
                r#"{{"address":"10.{}.{}.{}","inbound_port":4143,"version":"bench"}}"#,
                h / 65536 % 256,
                h / 256 % 256,
                h % 256
            ),
            on_lease(),
        ));
    }
    for s in 0..services {
        // With its owner record, as agents allocate them (crate::vip): agents that allocate
        // VIPs beside this catalog never take one of its addresses.
        let vip = format!("127.77.{}.{}", s / 254 % 256, s % 254 + 1);
        ops.push(TxnOp::put(
            format!("/hostmesh/v1/vips/svc-{s}"),
            format!("\"{vip}\""),
            None,
        ));
        ops.push(TxnOp::put(
            format!("/hostmesh/v1/vip-owners/{vip}"),
            format!("svc-{s}"),
            None,
        ));
        for i in 0..3 {
            let host = (s * 3 + i) % hosts;
            ops.push(TxnOp::put(
                format!("/hostmesh/v1/hosts/h{host}/instances/svc-{s}/i{i}"),
                r#"{"port":8080,"protocol":"http","tags":["v1"],"weight":100,"health":"passing"}"#,
                on_lease(),
            ));
        }
    }
    for chunk in ops.chunks(100) {
        kv.txn(Txn::new().and_then(chunk.to_vec())).await?;
    }
    Ok(Filled {
        services,
        hosts,
        keys: ops.len(),
        lease,
        took: started.elapsed(),
    })
}
