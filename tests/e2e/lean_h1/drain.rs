//! SIGTERM on the lean path (docs/reference/lifecycle.md, `crates/listen/src/shutdown.rs`): requests in
//! flight finish, idle connections close at once rather than at the end of the drain, and a
//! request that comes on a kept connection after the signal is answered with `connection: close`
//! or not taken at all, never cut short.

use std::time::{Duration, Instant};

use hostmesh_tests::{AgentOpts, RawConn, RawResponse, Signal, wait_until};

use super::{assert_lean, get, one_host};

/// The drain under test, long enough to tell "at once" from "at the end of it".
const DRAIN: Duration = Duration::from_secs(3);
/// How long each request in flight takes at the app: well within the drain.
const SLOW: Duration = Duration::from_millis(1500);

fn join<T>(h: std::thread::ScopedJoinHandle<'_, T>) -> T {
    h.join().expect("a reader thread")
}

/// What came on a connection until it closed (5 s at most): a response, if any began (`Err`
/// when it came cut short), and whether the connection then closed with nothing more.
fn until_closed(c: &mut RawConn) -> (Option<Result<RawResponse, String>>, Result<(), String>) {
    match c.closes_within(Duration::from_secs(5)) {
        Ok(()) => (None, Ok(())),
        // Bytes came (and are kept for the response), or nothing and no close.
        Err(_) => {
            let r = c.try_response(false);
            (Some(r), c.closes_within(Duration::from_secs(1)))
        }
    }
}

#[test]
fn sigterm_finishes_requests_in_flight_closes_idle_connections_and_takes_no_request_half() {
    let mut m = one_host(AgentOpts::new().drain("3s"));
    let vip = m.vip;
    // Kept connections, each having served one lean request.
    let kept = |n: usize| -> Vec<RawConn> {
        m.a.in_ns(|| {
            (0..n)
                .map(|_| {
                    let mut c = RawConn::connect(vip);
                    let r = c.request(&get("/prime", ""));
                    assert_eq!(r.status, 200, "{}", r.head);
                    assert_lean(&r, "GET /prime");
                    c
                })
                .collect()
        })
    };
    // Several of each: connections are spread over the per-CPU workers, each must hear it.
    let mut busy = kept(4);
    let mut idle = kept(4);
    let mut after = kept(1);
    m.app.set_delay(SLOW);
    let before = m.app.request_count();
    for c in &mut busy {
        c.send(&get("/in-flight", ""));
    }
    wait_until(
        Duration::from_secs(5),
        "the app has every request in flight",
        || m.app.request_count() == before + busy.len(),
    );
    let stopped = Instant::now();
    m.agent.signal(Signal::Term);
    // Sent at once, it reaches the agent while it deregisters, before the drain starts; its
    // answer comes from the app well into the drain, and is the connection's last.
    after[0].send(&get("/after-sigterm", ""));

    let (in_flight, idle_ends, after_sigterm) = std::thread::scope(|s| {
        let in_flight: Vec<_> = busy
            .iter_mut()
            .map(|c| {
                s.spawn(move || {
                    let r = c.try_response(false);
                    (r, c.closes_within(DRAIN + Duration::from_secs(2)))
                })
            })
            .collect();
        let idle_ends: Vec<_> = idle
            .iter_mut()
            .map(|c| {
                s.spawn(move || {
                    let closed = c.closes_within(DRAIN + Duration::from_secs(2));
                    (closed, stopped.elapsed())
                })
            })
            .collect();
        let after_sigterm = until_closed(&mut after[0]);
        (
            in_flight.into_iter().map(join).collect::<Vec<_>>(),
            idle_ends.into_iter().map(join).collect::<Vec<_>>(),
            after_sigterm,
        )
    });

    for (r, closed) in &in_flight {
        eprintln!(
            "DEBUG in flight {:?}",
            r.as_ref().map(|r| r.header("connection"))
        );
        let r = r
            .as_ref()
            .unwrap_or_else(|e| panic!("a request in flight: {e}"));
        assert_eq!((r.status, r.text()), (200, "ok\n".to_owned()), "{}", r.head);
        assert_lean(r, "a request in flight at SIGTERM");
        assert_eq!(
            *closed,
            Ok(()),
            "after its last response while draining, a connection ends"
        );
    }
    for (closed, at) in &idle_ends {
        assert_eq!(*closed, Ok(()), "an idle connection while draining");
        assert!(
            *at < Duration::from_millis(1500),
            "an idle connection closed {at:?} after SIGTERM; the drain is {DRAIN:?}"
        );
    }
    let status = m
        .agent
        .wait_exit(DRAIN + Duration::from_secs(3))
        .expect("the agent exits after its drain");
    assert_eq!(status.code(), Some(0), "{}", m.agent.log_tail(20));
    assert!(
        stopped.elapsed() >= SLOW,
        "exited before the requests in flight were answered"
    );
    match after_sigterm {
        // Not taken: closed before a byte of an answer.
        (None, closed) => assert_eq!(closed, Ok(())),
        (Some(Ok(r)), closed) => {
            assert_eq!((r.status, r.text()), (200, "ok\n".to_owned()), "{}", r.head);
            assert_eq!(
                r.header("connection"),
                Some("close"),
                "a request sent on a kept connection after SIGTERM was answered and the \
                 connection closed, without saying so:\n{}",
                r.head
            );
            assert_eq!(
                closed,
                Ok(()),
                "the connection ends after `connection: close`"
            );
        }
        (Some(Err(e)), _) => {
            panic!("a request sent on a kept connection after SIGTERM: a cut response: {e}")
        }
    }
}
