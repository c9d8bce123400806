//! VIP allocation: one transaction creates `vips/<name>` and `vip-owners/<ip>` only if neither
//! exists, so two agents racing for VIPs can never share one and no lock is needed. The first
//! candidate is a stable hash of the name (few collisions when a fleet starts at once); after a
//! collision the next free address is taken from a listing of `vip-owners/`.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use etcd_client::{Compare, CompareOp, GetOptions, KvClient, Txn, TxnOp, TxnOpResponse};
use ipnet::Ipv4Net;

use crate::keys::{Layout, prefix_end};
use crate::record::{VipValueError, parse_vip};

#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// Every address of the range is taken: widen `vip_range`.
    #[error("no free VIP left in {0}")]
    RangeFull(Ipv4Net),
    /// A value under `vips/` that is not an address: an operator must fix it.
    #[error("vips/{name} holds a bad value: {why}")]
    BadValue { name: String, why: VipValueError },
    /// A value under `vips/` outside `vip_range` (the range changed, or someone wrote it): an
    /// operator must fix the value or the range.
    #[error("vips/{name} holds a bad value: {ip} lies outside vip_range {range}")]
    OutsideRange {
        name: String,
        ip: Ipv4Addr,
        range: Ipv4Net,
    },
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
}

/// Attempts before giving up on a name within one call (each lost race takes another round).
const ROUNDS: usize = 64;

/// Returns the VIP of `name`, allocating one if it has none yet.
pub async fn ensure(
    kv: &mut KvClient,
    layout: &Layout,
    range: Ipv4Net,
    name: &str,
) -> Result<Ipv4Addr, VipError> {
    let vip_key = layout.vip(name);
    let checked = |value: &[u8]| {
        let ip = parse_vip(value).map_err(|why| VipError::BadValue {
            name: name.to_owned(),
            why,
        })?;
        if usable_contains(range, ip) {
            Ok(ip)
        } else {
            Err(VipError::OutsideRange {
                name: name.to_owned(),
                ip,
                range,
            })
        }
    };
    if let Some(existing) = kv.get(vip_key.as_str(), None).await?.kvs().first() {
        return checked(existing.value());
    }
    let mut candidate = first_candidate(range, name);
    for _ in 0..ROUNDS {
        let owner_key = layout.vip_owner(candidate);
        let txn = Txn::new()
            .when([
                Compare::create_revision(vip_key.as_str(), CompareOp::Equal, 0),
                Compare::create_revision(owner_key.as_str(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(vip_key.as_str(), format!("\"{candidate}\""), None),
                TxnOp::put(owner_key.as_str(), name, None),
            ])
            .or_else([TxnOp::get(vip_key.as_str(), None)]);
        let resp = kv.txn(txn).await?;
        if resp.succeeded() {
            tracing::info!(name, vip = %candidate, "allocated a VIP");
            return Ok(candidate);
        }
        // Lost a race: either someone gave this name a VIP meanwhile, or the address is taken.
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(get) = op
                && let Some(kv) = get.kvs().first()
            {
                return checked(kv.value());
            }
        }
        let used = used_addresses(kv, layout).await?;
        candidate = next_free(range, candidate, &used).ok_or(VipError::RangeFull(range))?;
    }
    Err(VipError::RangeFull(range))
}

/// The addresses of the range that can be handed out: all but the network and broadcast
/// addresses (some tools refuse those even on loopback).
fn usable(range: Ipv4Net) -> (u32, u32) {
    let net = u32::from(range.network());
    let bcast = u32::from(range.broadcast());
    if range.prefix_len() >= 31 {
        (net, bcast)
    } else {
        (net + 1, bcast - 1)
    }
}

/// Whether `ip` is one of the addresses [`usable`] allows in `range`.
pub(crate) fn usable_contains(range: Ipv4Net, ip: Ipv4Addr) -> bool {
    let (lo, hi) = usable(range);
    (lo..=hi).contains(&u32::from(ip))
}

/// FNV-1a of the name: stable across versions and platforms (std's hasher is not), so every
/// agent proposes the same first address for a name.
fn first_candidate(range: Ipv4Net, name: &str) -> Ipv4Addr {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let (lo, hi) = usable(range);
    let size = u64::from(hi - lo) + 1;
    Ipv4Addr::from(lo + (hash % size) as u32)
}

/// The first address after `from` (wrapping) that is not in `used`.
fn next_free(range: Ipv4Net, from: Ipv4Addr, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (lo, hi) = usable(range);
    let size = hi - lo + 1;
    let start = u32::from(from).clamp(lo, hi) - lo;
    (1..=size)
        .map(|step| Ipv4Addr::from(lo + (start + step) % size))
        .find(|ip| !used.contains(ip))
}

async fn used_addresses(
    kv: &mut KvClient,
    layout: &Layout,
) -> Result<HashSet<Ipv4Addr>, etcd_client::Error> {
    let prefix = layout.vip_owners_prefix();
    let end = prefix_end(&prefix);
    let mut start = prefix.clone().into_bytes();
    let mut used = HashSet::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(5000);
        let resp = kv.get(start.clone(), Some(options)).await?;
        for kv in resp.kvs() {
            if let Some(ip) = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
                .and_then(|ip| ip.parse().ok())
            {
                used.insert(ip);
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                start = last.key().to_vec();
                start.push(0);
            }
            _ => return Ok(used),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str) -> Ipv4Net {
        s.parse().expect("range")
    }

    #[test]
    fn candidates_stay_in_the_usable_range_and_are_stable() {
        let r = range("127.77.0.0/16");
        let a = first_candidate(r, "orders");
        assert_eq!(a, first_candidate(r, "orders"));
        assert!(r.contains(&a));
        assert_ne!(a, r.network());
        assert_ne!(a, r.broadcast());
        let small = range("127.77.0.0/30");
        for name in ["a", "b", "c", "d", "e", "orders"] {
            let ip = first_candidate(small, name);
            assert!(ip == Ipv4Addr::new(127, 77, 0, 1) || ip == Ipv4Addr::new(127, 77, 0, 2));
        }
    }

    #[test]
    fn next_free_wraps_and_detects_a_full_range() {
        let r = range("127.77.0.0/29"); // usable .1 ..= .6
        let mut used: HashSet<Ipv4Addr> = HashSet::new();
        used.insert(Ipv4Addr::new(127, 77, 0, 6));
        used.insert(Ipv4Addr::new(127, 77, 0, 1));
        assert_eq!(
            next_free(r, Ipv4Addr::new(127, 77, 0, 5), &used),
            Some(Ipv4Addr::new(127, 77, 0, 2))
        );
        for i in 1..=6 {
            used.insert(Ipv4Addr::new(127, 77, 0, i));
        }
        assert_eq!(next_free(r, Ipv4Addr::new(127, 77, 0, 3), &used), None);
    }
}
