//! What one access log line says: one HTTP request or one TCP connection, as the agent saw it.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

/// Which side of the agent the request passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// An app on this host called a service.
    Outbound,
    /// A peer agent brought a request to an app on this host.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// One request or TCP connection. Built on the data path only while access logs are on, and
/// formatted on the writer thread.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// When the request (or connection) arrived.
    pub start: SystemTime,
    pub direction: Direction,
    /// `http`, `grpc` or `tcp`.
    pub protocol: &'static str,
    /// The client's socket: the app's (outbound) or the peer agent's (inbound).
    pub client: Option<SocketAddr>,
    /// The calling host: this host (outbound) or the peer proven by its certificate (inbound).
    pub caller: Option<String>,
    pub service: String,
    /// `HOST/ID` of the instance that answered (or was tried last); `None` when none was.
    pub instance: Option<String>,
    /// HTTP only.
    pub method: Option<String>,
    /// HTTP only: the request target's path and query, as received.
    pub path: Option<String>,
    /// HTTP only: the status the client got.
    pub status: Option<u16>,
    /// Body bytes from the client (HTTP), or bytes from the client (TCP).
    pub bytes_in: u64,
    /// Body bytes to the client (HTTP), or bytes to the client (TCP).
    pub bytes_out: u64,
    /// Until the response head was ready (HTTP).
    pub to_headers: Option<Duration>,
    /// Until the last byte went to the client, or the exchange ended.
    pub duration: Duration,
    /// Instances tried (1 when the first answered; 0 when none could be).
    pub attempts: u32,
    /// The `x-hostmesh-error` reason when an agent answered instead of the app.
    pub error: Option<String>,
    /// The W3C trace id of the request, when it carries one or the agent started one.
    pub trace_id: Option<String>,
}

impl Entry {
    /// An entry for `service` with every optional field empty, to be filled in.
    pub fn new(direction: Direction, protocol: &'static str, service: &str) -> Entry {
        Entry {
            start: SystemTime::now(),
            direction,
            protocol,
            client: None,
            caller: None,
            service: service.to_owned(),
            instance: None,
            method: None,
            path: None,
            status: None,
            bytes_in: 0,
            bytes_out: 0,
            to_headers: None,
            duration: Duration::ZERO,
            attempts: 0,
            error: None,
            trace_id: None,
        }
    }
}

/// The trace id (32 hex digits) of a `traceparent` value, if it is well formed enough to have
/// one.
pub fn trace_id_of(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}
