//! Draining served connections at shutdown (docs/reference/lifecycle.md): once the agent has
//! deregistered, every HTTP connection it serves is told to finish: HTTP/2 connections get a
//! GOAWAY (requests already sent are still answered), idle HTTP/1 connections close, busy ones
//! close after their current response. The clients reconnect for their next request, which
//! an agent that is still draining serves ("late arrivals") and one that has stopped no longer
//! gets. Connections accepted while draining serve one request and close.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pin_project_lite::pin_project! {
    /// A served connection that is shut down gracefully (by `shutdown`) when `drain` fires.
    #[derive(Debug)]
    pub struct Graceful<C, F> {
        #[pin]
        conn: C,
        #[pin]
        drain: WaitForCancellationFutureOwned,
        shutdown: Option<F>,
    }
}

impl<C, F> Graceful<C, F>
where
    C: Future,
    F: FnOnce(Pin<&mut C>),
{
    /// `shutdown` is the connection's own graceful shutdown (hyper's `graceful_shutdown`).
    pub fn new(conn: C, drain: &CancellationToken, shutdown: F) -> Self {
        Graceful {
            conn,
            drain: drain.clone().cancelled_owned(),
            shutdown: Some(shutdown),
        }
    }
}

impl<C, F> Future for Graceful<C, F>
where
    C: Future,
    F: FnOnce(Pin<&mut C>),
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.shutdown.is_some()
            && this.drain.poll(cx).is_ready()
            && let Some(shutdown) = this.shutdown.take()
        {
            shutdown(this.conn.as_mut());
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[tokio::test]
    async fn shuts_the_connection_down_once_draining_starts() {
        let drain = CancellationToken::new();
        let asked = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let flag = asked.clone();
        let conn = Graceful::new(rx, &drain, move |_| flag.store(true, Ordering::SeqCst));
        let task = tokio::spawn(conn);
        tokio::task::yield_now().await;
        assert!(!asked.load(Ordering::SeqCst));
        drain.cancel();
        tokio::task::yield_now().await;
        assert!(asked.load(Ordering::SeqCst), "shutdown not called");
        // The connection itself decides when it is done.
        assert!(!task.is_finished());
        tx.send(()).expect("still waiting");
        assert!(task.await.expect("joined").is_ok());
    }
}
