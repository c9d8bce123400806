//! The loop both idle-connection lists (peers' HTTP/2 connections, apps' HTTP/1.1 ones) run
//! to let go of connections nothing used for a while.

use std::time::Duration;

/// Calls `expire` every half `idle_timeout` (at least every 100 ms), so no idle connection
/// lives past one and a half of it, until `expire` says nothing is left: the list's owner
/// starts a new sweep when it keeps a connection again.
pub(crate) async fn until_empty(idle_timeout: Duration, mut expire: impl FnMut() -> bool) {
    let every = (idle_timeout / 2).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        if expire() {
            return;
        }
    }
}
