//! Opening a TCP connection for the data path: to a same-host app or to a peer agent, within a
//! timeout, with Nagle off (proxied bytes should leave as soon as they arrive). One function for
//! every place that connects, so that the error says the same thing everywhere.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// No connection: nothing was sent, so the other side never saw a request.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {0}: {1}")]
    Failed(SocketAddr, io::Error),
    #[error("connect to {0}: timed out")]
    TimedOut(SocketAddr),
}

/// Connects to `target` within `timeout`.
pub async fn connect(target: SocketAddr, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target)).await {
        Err(_) => return Err(ConnectError::TimedOut(target)),
        Ok(Err(e)) => return Err(ConnectError::Failed(target, e)),
        Ok(Ok(s)) => s,
    };
    let _ = stream.set_nodelay(true);
    Ok(stream)
}
