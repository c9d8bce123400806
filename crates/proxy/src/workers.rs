//! The data path's threads: one single-threaded tokio runtime per CPU, each serving whole
//! connections, each handed as it is accepted to the worker with the fewest open ones.
//!
//! Why not the agent's work-stealing runtime: a proxied request is a chain of short steps on
//! one connection, woken by I/O. On the shared runtime each wake-up may unpark another worker
//! (a futex call) or move the task to another CPU, and on two cores that cost as much as the
//! rest of the request's user-space work. A connection that stays on one thread for its life,
//! as in HAProxy's and nginx's event loops, pays it never; the one hand-off per connection
//! (moving the socket to the worker's reactor) is all that is left. Everything else (the
//! catalog, DNS, the admin API, etcd) stays on the main runtime.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    /// The index of the worker this thread is, on the workers' threads.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller, or `None` off the workers' threads (the main
/// runtime, tests). What is kept per worker (the connection pools) is picked by it.
pub fn current() -> Option<usize> {
    CURRENT.with(Cell::get)
}

#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Open connections per worker.
    open: Arc<[AtomicUsize]>,
    /// Where the search for the least busy worker starts: ties go round-robin.
    next: AtomicUsize,
    /// Ends the workers' threads (their remaining connections are dropped).
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` worker threads, or one per CPU the agent may run on when `n` is 0. With one
    /// per CPU and `pin` (`proxy.pin_workers`, off by default), each stays on its own CPU. Off,
    /// the kernel may wake a worker on whichever CPU is idle: on the two-host bench, pinned
    /// workers left 6-10 % of the machine idle while their own CPUs were busy (2-4 % unpinned)
    /// and served about 10 % fewer requests (docs/ARCHITECTURE.md).
    pub fn start(n: usize, pin: bool) -> io::Result<Workers> {
        let cpus = allowed_cpus();
        let n = match n {
            0 => cpus.len().max(1),
            n => n,
        };
        let pin_to = |i: usize| (pin && n == cpus.len()).then(|| cpus[i]);
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            let cpu = pin_to(i);
            std::thread::Builder::new()
                .name(format!("hostmesh-data-{i}"))
                .spawn(move || {
                    CURRENT.with(|c| c.set(Some(i)));
                    if let Some(cpu) = cpu {
                        pin_current_thread(cpu);
                    }
                    runtime.block_on(stop.cancelled());
                })?;
        }
        Ok(Workers {
            open: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            handles,
            next: AtomicUsize::new(0),
            stop,
        })
    }

    /// How many workers there are.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Never: `start` makes at least one.
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Serves `stream` with `serve` on the worker with the fewest open connections (the next in
    /// turn among equals), for the rest of its life.
    ///
    /// Why not plain turns: a few long-lived connections can carry all of a host's load (a
    /// peer agent's HTTP/2 connections, one per worker of that peer), and short ones (an
    /// app's one-off request, a health check) take turns between them. In turns, whether a
    /// peer's two connections shared a worker depended on how many short ones came between
    /// them; when they did, that host's inbound traffic ran on one of its CPUs.
    pub fn run<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // The socket leaves this runtime's reactor and joins the worker's.
        let std = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("handing a connection to a worker: {e}");
                return;
            }
        };
        let i = self.least_busy();
        // Relaxed: the counts only spread connections; no other memory is ordered by them.
        self.open[i].fetch_add(1, Ordering::Relaxed);
        let open = OpenGuard {
            open: self.open.clone(),
            worker: i,
        };
        self.handles[i].spawn(async move {
            let _open = open;
            match TcpStream::from_std(std) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::debug!("taking a connection on a worker: {e}"),
            }
        });
    }

    /// The worker with the fewest open connections, searching from the next in turn.
    fn least_busy(&self) -> usize {
        let n = self.handles.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.open[i].load(Ordering::Relaxed))
            .unwrap_or(start)
    }
}

/// Counts a connection open on its worker until its task ends (or is dropped unrun).
struct OpenGuard {
    open: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

/// The CPUs this process may run on (systemd's `CPUAffinity=`, `taskset`), in order.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{CpuSet, sched_getaffinity};
    use nix::unistd::Pid;
    match sched_getaffinity(Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => (0..std::thread::available_parallelism().map_or(1, usize::from)).collect(),
    }
}

fn pin_current_thread(cpu: usize) {
    use nix::sched::{CpuSet, sched_setaffinity};
    use nix::unistd::Pid;
    let mut set = CpuSet::new();
    // Not fatal: the worker runs unpinned, as with `pin_workers = false`.
    let pinned = set
        .set(cpu)
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    if let Err(e) = pinned {
        tracing::warn!(cpu, "cannot pin a data path thread: {e}");
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn connections_are_served_on_the_workers_threads_in_turn() {
        let workers = Workers::start(2, false).expect("workers");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut names = Vec::new();
        for _ in 0..3 {
            let mut client = TcpStream::connect(addr).await.expect("connect");
            let (server, _) = listener.accept().await.expect("accept");
            workers.run(server, |mut s| async move {
                let name = std::thread::current().name().unwrap_or("").to_owned();
                assert_eq!(
                    Some(
                        name.trim_start_matches("hostmesh-data-")
                            .parse()
                            .unwrap_or(99)
                    ),
                    current()
                );
                let _ = s.write_all(name.as_bytes()).await;
            });
            let mut name = String::new();
            client.read_to_string(&mut name).await.expect("read");
            names.push(name);
        }
        assert_eq!(
            names,
            ["hostmesh-data-0", "hostmesh-data-1", "hostmesh-data-0"]
        );
    }

    /// The name of the worker thread that serves the next connection to `listener`, and the
    /// client's end, held open (the worker holds its end until the client closes).
    async fn served_on(workers: &Workers, listener: &TcpListener) -> (String, TcpStream) {
        let addr = listener.local_addr().expect("addr");
        let mut client = TcpStream::connect(addr).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        workers.run(server, |mut s| async move {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = s.write_all(format!("{name}\n").as_bytes()).await;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
        });
        let mut name = [0u8; 64];
        let n = client.read(&mut name).await.expect("read");
        let name = String::from_utf8_lossy(&name[..n]).trim().to_owned();
        (name, client)
    }

    #[tokio::test]
    async fn a_connection_goes_to_the_worker_with_fewer_open_ones() {
        let workers = Workers::start(2, false).expect("workers");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        // A long-lived connection (a peer's HTTP/2 connection) on worker 0, then a short one
        // (an app's one-off request) on worker 1 that closes.
        let (first, _held) = served_on(&workers, &listener).await;
        assert_eq!(first, "hostmesh-data-0");
        let (probe, probe_conn) = served_on(&workers, &listener).await;
        assert_eq!(probe, "hostmesh-data-1");
        drop(probe_conn);
        // Its task ends once it reads the close; then worker 1 has none open.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while workers.open[1].load(Ordering::Relaxed) != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the probe's task never ended"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // In turns this one would go to worker 0 beside the first; it goes where none is open.
        let (second, _held2) = served_on(&workers, &listener).await;
        assert_eq!(second, "hostmesh-data-1");
    }
}
