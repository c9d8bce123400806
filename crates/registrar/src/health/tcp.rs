//! `tcp = true`: the check passes when a TCP connection to the target is established.
//!
//! Nothing is sent: the point is only "something is listening and its accept queue is not
//! wedged", which works for any protocol. The caller bounds the attempt with the check timeout.

use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::ProbeError;

/// Connects to `target` and closes the connection straight away.
pub(super) async fn probe(target: SocketAddr) -> Result<(), ProbeError> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|error| ProbeError::Connect { target, error })?;
    drop(stream);
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use hostmesh_config::spec::CheckKind;

    use super::super::probe;

    const TIMEOUT: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn passes_when_listening() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        probe(&CheckKind::Tcp, addr, TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn fails_when_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = probe(&CheckKind::Tcp, addr, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("connect {addr}: connection refused")
        );
    }
}
