//! systemd's notify protocol (`Type=notify`, docs/reference/lifecycle.md): READY once the agent
//! would answer `/ready` with 200, RELOADING and READY around a SIGHUP reload, STOPPING when a
//! stop signal arrives, and WATCHDOG pings at half of `WatchdogSec`. Outside systemd (no
//! `NOTIFY_SOCKET`) every call does nothing.
//!
//! The pings come from a task on the agent's runtime, so a runtime that stops scheduling tasks
//! stops the pings and systemd restarts the agent.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

/// Sends one set of states; a failure is logged, never fatal (systemd may have gone away).
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("systemd notify: {e}");
    }
}

pub fn ready() {
    send(&[NotifyState::Ready]);
}

pub fn reloading() {
    // `Type=notify-reload` also wants the time of the reload; plain `Type=notify` ignores it.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Pings the watchdog every half `WatchdogSec` until `cancel`, when systemd asked for it.
pub fn spawn_watchdog(cancel: CancellationToken) {
    let Some(timeout) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (timeout / 2).max(Duration::from_millis(10));
    tracing::info!(?timeout, "systemd watchdog enabled");
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => send(&[NotifyState::Watchdog]),
            }
        }
    });
}
