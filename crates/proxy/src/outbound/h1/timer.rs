//! One timer per app connection for every deadline it meets in turn (the request head's, then
//! each attempt's), moved lazily: it stays armed at an earlier instant and, when it fires before
//! the deadline that matters now, is re-armed at that one. A deadline that only ever moves later
//! (the next request's, usually) thus costs no timer-wheel work per request, where a fresh
//! `tokio::time::timeout` registers and removes an entry every time; on the lean path that was a
//! tenth of the agent's CPU.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::{Instant, Sleep};

use crate::outbound::attempts::{Elapsed, Timer};

#[derive(Debug)]
pub struct LazyTimer {
    sleep: Pin<Box<Sleep>>,
}

impl LazyTimer {
    pub fn new(at: Instant) -> Self {
        LazyTimer {
            sleep: Box::pin(tokio::time::sleep_until(at)),
        }
    }

    /// Ready once `deadline` has passed.
    pub fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if deadline < self.sleep.deadline() {
            // Earlier than armed (a short request timeout): the one case that moves it now.
            self.sleep.as_mut().reset(deadline);
        }
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            // Fired for an earlier deadline: wait on for this one.
            self.sleep.as_mut().reset(deadline);
        }
    }

    /// Waits until `deadline` has passed.
    pub async fn passed(&mut self, deadline: Instant) {
        poll_fn(|cx| self.poll_passed(cx, deadline)).await;
    }
}

impl LazyTimer {
    /// `f`'s output, or [`Elapsed`] once `at` has passed first.
    pub(crate) fn until<F: Future>(&mut self, at: Instant, f: F) -> Until<'_, F> {
        Until { timer: self, at, f }
    }
}

pin_project_lite::pin_project! {
    /// [`LazyTimer::until`]'s future. A struct rather than an `async fn` taking `f`: such a
    /// function's state holds `f` twice (as its argument and as the future it awaits), so each
    /// layer doubled the size of the attempt's future (2.5 KB became 7.5 KB), and every move of
    /// it cost a `memcpy` that size (callgrind, two hosts: 500 instructions per request here).
    pub(crate) struct Until<'t, F> {
        timer: &'t mut LazyTimer,
        at: Instant,
        #[pin]
        f: F,
    }
}

impl<F: Future> Future for Until<'_, F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.f.poll(cx) {
            return Poll::Ready(Ok(out));
        }
        this.timer.poll_passed(cx, *this.at).map(|()| Err(Elapsed))
    }
}

impl Timer for LazyTimer {
    fn within<F: Future>(
        &mut self,
        at: Instant,
        f: F,
    ) -> impl Future<Output = Result<F::Output, Elapsed>> {
        self.until(at, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn each_deadline_is_met_whichever_way_it_moves() {
        let start = Instant::now();
        let mut timer = LazyTimer::new(start + Duration::from_secs(1));
        // Later than armed: fires at the later one, not at the armed one.
        timer.passed(start + Duration::from_secs(3)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        // Earlier than armed (armed now at 3 s from start): fires at once when it has passed.
        timer.passed(start + Duration::from_secs(2)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        let slow = tokio::time::sleep(Duration::from_secs(10));
        let r = timer.within(start + Duration::from_secs(5), slow).await;
        assert!(r.is_err());
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        let quick = tokio::time::sleep(Duration::from_secs(1));
        let r = timer.within(start + Duration::from_secs(60), quick).await;
        assert!(r.is_ok());
        assert_eq!(start.elapsed(), Duration::from_secs(6));
    }
}
