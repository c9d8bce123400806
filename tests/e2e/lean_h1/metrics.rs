//! Requests the lean path serves are counted like any other.

use std::time::Duration;

use hostmesh_tests::{AgentOpts, wait_until};

use super::{get, lean, one_host};
use crate::metrics::{parse, sum};

#[test]
fn lean_requests_are_counted_by_service_and_status() {
    let m = one_host(AgentOpts::new());
    let count = |code: &str| {
        let samples = parse(&m.agent.metrics());
        let labels = [("direction", "outbound"), ("service", "orders")];
        (
            sum(
                &samples,
                "hostmesh_requests_total",
                &[labels[0], labels[1], ("code", code)],
            ),
            sum(&samples, "hostmesh_request_duration_seconds_count", &labels),
        )
    };
    let (ok_before, all_before) = count("200");
    let (missing_before, _) = count("404");
    let mut burst = Vec::new();
    for i in 0..30 {
        burst.extend(get(&format!("/n{i}"), ""));
    }
    for _ in 0..5 {
        burst.extend(get("/empty?status=404", ""));
    }
    let rs = m.conn(|c| {
        c.send(&burst);
        (0..35).map(|_| c.response(false)).collect::<Vec<_>>()
    });
    assert!(rs.iter().all(lean));
    assert_eq!(rs.iter().filter(|r| r.status == 200).count(), 30);
    wait_until(Duration::from_secs(2), "35 requests counted", || {
        let (ok, all) = count("200");
        let (missing, _) = count("404");
        ok - ok_before == 30.0 && missing - missing_before == 5.0 && all - all_before == 35.0
    });
}
