//! The TCP listener (RFC 1035 §4.2.2 framing, RFC 7766 behaviour): 2-byte length prefix,
//! several queries per connection, answered as they complete (a slow forwarded query does not
//! hold up a mesh answer behind it).
//!
//! No client can stall the shim: every read and write has a deadline, a connection that does
//! not read its answers is closed, and at `MAX_TCP_CONNECTIONS` (server.rs) a new client takes
//! the place of the connection idle the longest (RFC 7766 §6.2.3); only when none is idle is
//! the new one closed on accept.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use hickory_proto::op::ResponseCode;

use hostmesh_listen::idle::{Admission, Busy, Capped, Idle, Slot};

use super::answer::{Handled, answer_local};
use super::forward::relay;
use super::metrics::{Outcome, QType, Source};
use super::shared::Shared;
use super::wire::{Request, Transport};

/// A connection with no new query for this long is closed (RFC 7766 §6.2.3 leaves the value
/// to the server; stub resolvers reconnect cheaply).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Once a length prefix arrived, the message must follow within this.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not take an answer within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Queries of one connection being answered at once; beyond it the connection's reads wait.
const PIPELINE: usize = 16;
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

pub(crate) async fn accept(
    listener: TcpListener,
    max_connections: usize,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let open = Capped::new(max_connections);
    let accepting = async {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) if hostmesh_listen::descriptors::out_of_resources(&e) => {
                    hostmesh_listen::descriptors::exhaustion().record("dns", &e);
                    // Pause rather than spin.
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
                Err(e) => {
                    tracing::debug!("dns: tcp accept: {e}");
                    continue;
                }
            };
            let slot = match open.admit(IDLE_TIMEOUT, &cancel) {
                Some((slot, Admission::Room)) => slot,
                Some((slot, Admission::Evicted)) => {
                    shared.metrics.tcp_closed("evicted");
                    slot
                }
                None => {
                    shared.metrics.tcp_closed("refused");
                    tracing::debug!(
                        "dns: {max_connections} tcp connections open, none idle; closing a new one"
                    );
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (reader, writer) = stream.into_split();
            // Ends with the agent, or when a new client at the cap evicts it.
            let conn = slot.closed.clone();
            tokio::spawn(connection(reader, writer, shared.clone(), conn, slot));
        }
    };
    cancel.run_until_cancelled(accepting).await;
}

async fn connection(
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    shared: Arc<Shared>,
    conn: CancellationToken,
    slot: Slot,
) {
    let (tx, rx) = mpsc::channel(PIPELINE);
    let writing = tokio::spawn(write_answers(writer, rx, conn.clone()));
    let reading = read_queries(reader, tx, shared, conn.clone(), &slot.idle);
    conn.run_until_cancelled(reading).await;
    // Answers still being forwarded are written before the connection closes; the writer
    // ends when the last of them is sent (or the connection is cancelled).
    let _ = writing.await;
}

async fn read_queries(
    mut reader: OwnedReadHalf,
    tx: mpsc::Sender<Vec<u8>>,
    shared: Arc<Shared>,
    conn: CancellationToken,
    idle: &Idle,
) {
    let pipeline = Arc::new(Semaphore::new(PIPELINE));
    loop {
        let mut prefix = [0u8; 2];
        match tokio::time::timeout(IDLE_TIMEOUT, reader.read_exact(&mut prefix)).await {
            Ok(Ok(_)) => {}
            // EOF, reset or idle: done with this connection.
            _ => return,
        }
        // Busy (not to be evicted) from a query's first byte until it is answered.
        let busy = idle.busy();
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        match tokio::time::timeout(READ_TIMEOUT, reader.read_exact(&mut message)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let start = Instant::now();
        let handled = answer_local(&message, &shared.table.load(), Transport::Tcp);
        match handled {
            Handled::Reply(reply) => {
                shared.record(reply.qtype, reply.outcome, Source::Local, start);
                if tx.send(reply.bytes).await.is_err() {
                    return;
                }
            }
            // Garbage inside a well-framed message: nothing to answer, the framing still holds.
            Handled::Ignore => shared.record(QType::None, Outcome::Ignored, Source::Local, start),
            Handled::Forward(req) => {
                let qtype = QType::of(req.query.query_type());
                // This connection's turn first (waiting here only slows this client), then a
                // global slot, which is never waited for.
                let Ok(turn) = pipeline.clone().acquire_owned().await else {
                    return;
                };
                let Ok(slot) = shared.in_flight.clone().try_acquire_owned() else {
                    // Full. TCP clients do not retry a silent query quickly, so say so.
                    let mut m = req.response(ResponseCode::ServFail);
                    m.metadata.recursion_available = true;
                    let (bytes, _) = req.encode(m, Transport::Tcp);
                    shared.record(qtype, Outcome::Dropped, Source::Local, start);
                    drop(turn);
                    if tx.send(bytes).await.is_err() {
                        return;
                    }
                    continue;
                };
                let task = forward(shared.clone(), req, tx.clone(), start, [slot, turn], busy);
                tokio::spawn(conn.clone().run_until_cancelled_owned(task));
            }
        }
    }
}

async fn forward(
    shared: Arc<Shared>,
    req: Request,
    tx: mpsc::Sender<Vec<u8>>,
    start: Instant,
    permits: [OwnedSemaphorePermit; 2],
    _busy: Busy,
) {
    let Some(forwarder) = &shared.forwarder else {
        return;
    };
    let result = forwarder.lookup(&req).await;
    drop(permits);
    let (message, outcome) = relay(&req, result);
    let (bytes, truncated) = req.encode(message, Transport::Tcp);
    shared.record(
        QType::of(req.query.query_type()),
        if truncated {
            Outcome::Truncated
        } else {
            outcome
        },
        Source::Upstream,
        start,
    );
    let _ = tx.send(bytes).await;
}

async fn write_answers(
    mut writer: OwnedWriteHalf,
    mut rx: mpsc::Receiver<Vec<u8>>,
    conn: CancellationToken,
) {
    let writing = async {
        while let Some(answer) = rx.recv().await {
            // `encode` keeps every answer within 65535 bytes.
            let Ok(len) = u16::try_from(answer.len()) else {
                continue;
            };
            let mut frame = Vec::with_capacity(answer.len() + 2);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&answer);
            match tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&frame)).await {
                Ok(Ok(())) => {}
                // A client that does not read its answers loses the connection, and its
                // reader stops with it.
                _ => {
                    conn.cancel();
                    return;
                }
            }
        }
        let _ = tokio::time::timeout(WRITE_TIMEOUT, writer.shutdown()).await;
    };
    conn.run_until_cancelled(writing).await;
}
