//! The UDP listener: a few tasks share the socket; each answers mesh names inline and hands
//! forwarded queries to a task of their own, bounded by the global in-flight slots.
//!
//! Answers are sized to the client's EDNS payload (at most 1232) or 512 bytes, with TC=1 when
//! they do not fit, so the client retries over TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::answer::{Handled, answer_local};
use super::forward::relay;
use super::metrics::{Outcome, QType, Source};
use super::shared::Shared;
use super::wire::{Request, Transport};

/// The largest datagram; anything longer is cut by the kernel and then fails to parse.
const RECV_BUFFER: usize = 65_535;
/// Pause after a receive error so a persistent one cannot spin a core.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

pub(crate) async fn serve(socket: Arc<UdpSocket>, shared: Arc<Shared>, cancel: CancellationToken) {
    cancel
        .clone()
        .run_until_cancelled(receive_loop(socket, shared, cancel))
        .await;
}

async fn receive_loop(socket: Arc<UdpSocket>, shared: Arc<Shared>, cancel: CancellationToken) {
    let mut buf = vec![0u8; RECV_BUFFER];
    loop {
        let (len, peer) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                tracing::debug!("dns: udp receive: {e}");
                tokio::time::sleep(ERROR_PAUSE).await;
                continue;
            }
        };
        let start = Instant::now();
        let handled = answer_local(&buf[..len], &shared.table.load(), Transport::Udp);
        match handled {
            Handled::Reply(reply) => {
                // Counted before sending, so a client that got its answer sees it counted.
                shared.record(reply.qtype, reply.outcome, Source::Local, start);
                send(&socket, &reply.bytes, peer).await;
            }
            Handled::Ignore => shared.record(QType::None, Outcome::Ignored, Source::Local, start),
            Handled::Forward(req) => match shared.in_flight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let task = forward(socket.clone(), shared.clone(), req, peer, start, permit);
                    tokio::spawn(cancel.clone().run_until_cancelled_owned(task));
                }
                // Full: dropping is the cheapest signal, and the client's retry comes after
                // its timeout, when slots have likely freed up.
                Err(_) => shared.record(
                    QType::of(req.query.query_type()),
                    Outcome::Dropped,
                    Source::Local,
                    start,
                ),
            },
        }
    }
}

async fn forward(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    req: Request,
    peer: SocketAddr,
    start: Instant,
    permit: OwnedSemaphorePermit,
) {
    let Some(forwarder) = &shared.forwarder else {
        return;
    };
    let result = forwarder.lookup(&req).await;
    drop(permit);
    let (message, outcome) = relay(&req, result);
    let (bytes, truncated) = req.encode(message, Transport::Udp);
    let outcome = if truncated {
        Outcome::Truncated
    } else {
        outcome
    };
    shared.record(
        QType::of(req.query.query_type()),
        outcome,
        Source::Upstream,
        start,
    );
    send(&socket, &bytes, peer).await;
}

async fn send(socket: &UdpSocket, bytes: &[u8], peer: SocketAddr) {
    if let Err(e) = socket.send_to(bytes, peer).await {
        tracing::debug!("dns: udp send to {peer}: {e}");
    }
}
