//! A SIGHUP under an open lean connection (docs/reference/lifecycle.md, docs/reference/http.md): once the
//! only same-host instance's definition is gone, the next request on the connection gets the
//! agent's own 503, not a hang, and the agent goes on.

use std::time::Duration;

use hostmesh_tests::{Agent, AgentOpts, RawConn, Signal, wait_until};

use super::{assert_lean, get, one_host};
use crate::lifecycle::metric;

#[test]
fn a_reload_removing_the_only_local_instance_answers_the_next_request_503() {
    let mut m = one_host(AgentOpts::new());
    let reloads = |agent: &Agent| {
        metric(
            &agent.metrics(),
            "hostmesh_config_reloads_total{result=\"ok\"}",
        )
        .unwrap_or(0.0)
    };
    let before = m.app.request_count();
    let vip = m.vip;
    let mut c = m.a.in_ns(|| RawConn::connect(vip));
    let first = c.request(&get("/before", ""));
    let done = reloads(&m.agent);
    m.agent.remove_service("orders-1");
    m.agent.signal(Signal::Hup);
    wait_until(Duration::from_secs(10), "the reload done", || {
        reloads(&m.agent) > done
    });
    c.send(&get("/after-reload", ""));
    let then = c.try_response(false);
    // The connection then ends, or goes on as its answer said.
    let after = match &then {
        Ok(r) if r.header("connection") == Some("close") => {
            c.closes_within(Duration::from_secs(5)).map(|()| None)
        }
        Ok(_) => {
            c.send(&get("/again", ""));
            c.try_response(false).map(Some)
        }
        Err(_) => Ok(None),
    };
    assert_eq!(first.status, 200, "{}", first.head);
    assert_lean(&first, "GET /before");
    let then = then.unwrap_or_else(|e| {
        panic!(
            "the request after the reload got no answer: {e}\nagent log tail:\n{}",
            m.agent.log_tail(30)
        )
    });
    assert_eq!(then.status, 503, "{}{}", then.head, then.text());
    let reason = then.header("x-hostmesh-error").unwrap_or_default();
    assert!(
        ["no-endpoints", "no-local-instance"].contains(&reason),
        "x-hostmesh-error {reason:?}:\n{}",
        then.head
    );
    assert_eq!(then.text().trim(), format!("hostmesh: {reason}"));
    match after {
        Ok(None) => {}
        Ok(Some(again)) => assert_eq!(again.status, 503, "{}", again.head),
        Err(e) => panic!("after the 503: {e}"),
    }
    assert_eq!(
        m.seen_since(before),
        ["GET /before"],
        "a request reached the app after its definition was removed"
    );
    assert!(m.agent.is_running(), "{}", m.agent.log_tail(30));
    assert!(
        !m.agent.log().contains("panicked at"),
        "{}",
        m.agent.log_tail(30)
    );
}
