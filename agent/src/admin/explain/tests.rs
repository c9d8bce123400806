#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use hostmesh_config::spec::Protocol;
use hostmesh_registrar::catalog::Instance;
use hostmesh_registrar::record::Health;

use super::*;

fn instance(port: u16, tags: &[&str], health: Health) -> Instance {
    Instance {
        host: "b".into(),
        id: "orders-1".into(),
        address: Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2))),
        inbound_port: Some(4143),
        zone: None,
        port,
        protocol: Protocol::Http,
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        weight: 100,
        health,
        locked: false,
    }
}

#[tokio::test(start_paused = true)]
async fn each_exclusion_says_why_in_the_data_paths_order() {
    let ok = instance(8080, &["v1"], Health::Passing);
    let v2 = Split {
        tags: vec!["v2".into()],
        weight: 90,
    };
    let ejected = BreakerState::Ejected {
        until: Instant::now() + Duration::from_secs(4),
    };
    let why = |i: &Instance, tag, in_route, split, breaker| {
        why_excluded(i, 8080, tag, in_route, split, breaker)
    };
    assert_eq!(why(&ok, None, true, None, Some(BreakerState::Closed)), None);
    assert_eq!(
        why(
            &instance(9090, &[], Health::Critical),
            None,
            false,
            None,
            None
        )
        .unwrap(),
        "serves port 9090"
    );
    assert_eq!(
        why(&ok, Some("v2"), true, None, None).unwrap(),
        "not tagged v2"
    );
    assert_eq!(
        why(
            &instance(8080, &["v1"], Health::Maintenance),
            None,
            false,
            None,
            None
        )
        .unwrap(),
        "health is maintenance"
    );
    assert!(
        why(&ok, None, false, None, None)
            .unwrap()
            .contains("no info record")
    );
    assert_eq!(
        why(&ok, None, true, Some(&v2), Some(ejected)).unwrap(),
        "not in the drawn split (v2)"
    );
    assert_eq!(
        why(&ok, None, true, None, Some(ejected)).unwrap(),
        "ejected by its breaker"
    );
    assert!(
        why(
            &ok,
            None,
            true,
            None,
            Some(BreakerState::HalfOpen { probing: true })
        )
        .unwrap()
        .contains("probe is out")
    );
    // Half-open with the probe free: eligible (the next request is the probe).
    assert_eq!(
        why(
            &ok,
            None,
            true,
            None,
            Some(BreakerState::HalfOpen { probing: false })
        ),
        None
    );
}

#[test]
fn the_query_carries_the_target_and_repeated_headers() {
    let (target, headers) = question(
        "target=http%3A%2F%2Forders.mesh%3A8080%2Fx&header=x-canary%3A1&header=x-canary%3A2",
    )
    .unwrap();
    assert_eq!(target, "http://orders.mesh:8080/x");
    let values: Vec<_> = headers.get_all("x-canary").iter().collect();
    assert_eq!(values, ["1", "2"]);
    assert_eq!(header_map(&headers)["x-canary"], "1, 2");
    assert!(matches!(question(""), Err(Problem::Malformed(m)) if m.contains("target")));
    assert!(matches!(
        question("target=orders&header=nocolon"),
        Err(Problem::Malformed(m)) if m.contains("NAME:VALUE")
    ));
    assert!(matches!(
        question("target=orders&verbose=1"),
        Err(Problem::Malformed(m)) if m.contains("verbose")
    ));
}

#[test]
fn a_missing_port_is_the_services_only_port() {
    let orders = MeshName::from_vip_key("orders");
    let one = BTreeSet::from([8080]);
    let two = BTreeSet::from([8080, 9090]);
    assert_eq!(port_of(&orders, None, &one), Ok(8080));
    assert_eq!(port_of(&orders, Some(8080), &two), Ok(8080));
    assert!(matches!(
        port_of(&orders, None, &two),
        Err(Problem::Malformed(m)) if m.contains("8080, 9090")
    ));
    assert!(matches!(
        port_of(&orders, Some(7000), &two),
        Err(Problem::Unknown(m)) if m.contains("no instances on port 7000")
    ));
    assert!(matches!(
        port_of(&MeshName::from_vip_key("v9.orders"), None, &BTreeSet::new()),
        Err(Problem::Unknown(m)) if m.contains("v9.orders has no instances")
    ));
}
