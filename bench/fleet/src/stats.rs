//! Percentiles and per-window resource figures for the report.

use std::fmt;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, MemberFigures, Usage};

/// p50, p99 and max of a set of durations.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spread {
    pub p50: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub n: usize,
}

impl Spread {
    pub fn of(samples: &[Duration]) -> Spread {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        if sorted.is_empty() {
            return Spread::default();
        }
        Spread {
            p50: at(0.50),
            p99: at(0.99),
            max: sorted[sorted.len() - 1],
            n: sorted.len(),
        }
    }
}

impl fmt::Display for Spread {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        write!(
            f,
            "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n={})",
            ms(self.p50),
            ms(self.p99),
            ms(self.max),
            self.n
        )
    }
}

/// Resource figures at the start of a window, to report what was used during it.
#[derive(Debug)]
pub struct Window {
    started: Instant,
    members: Vec<Usage>,
    proxies: Vec<Usage>,
    figures: Vec<MemberFigures>,
    bench_cpu_s: f64,
}

impl Window {
    pub fn open(cluster: &Cluster) -> Window {
        Window {
            started: Instant::now(),
            members: cluster.members.iter().map(|m| m.usage()).collect(),
            proxies: cluster.proxies.iter().map(|p| p.usage()).collect(),
            figures: cluster.member_figures(),
            bench_cpu_s: hostmesh_bench_support::cpu_seconds(std::process::id()),
        }
    }

    /// One line per member and proxy: CPU (% of one core) over the window, RSS now, and for
    /// members the gRPC messages per second, the db size and leader changes in the window.
    pub fn report(&self, cluster: &Cluster, what: &str) -> Vec<String> {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let mut lines = vec![format!("{what} ({secs:.0} s):")];
        let now = cluster.member_figures();
        for (i, m) in cluster.members.iter().enumerate() {
            let u = m.usage();
            let (before, after) = (self.figures[i], now[i]);
            lines.push(format!(
                "  etcd {}: CPU {:.1} %, RSS {:.0} MiB, {:.0} gRPC messages/s, db {:.1} MiB, \
                 leader changes {:.0}, watchers {:.0}{}",
                m.name,
                (u.cpu_s - self.members[i].cpu_s) / secs * 100.0,
                u.rss_kib as f64 / 1024.0,
                (after.messages - before.messages) / secs,
                after.db_bytes / 1048576.0,
                after.leader_changes - before.leader_changes,
                after.watchers,
                if after.has_leader { "" } else { ", NO LEADER" }
            ));
        }
        for (i, p) in cluster.proxies.iter().enumerate() {
            let u = p.usage();
            lines.push(format!(
                "  {}: CPU {:.1} %, RSS {:.0} MiB",
                p.name,
                (u.cpu_s - self.proxies[i].cpu_s) / secs * 100.0,
                u.rss_kib as f64 / 1024.0
            ));
        }
        let bench = hostmesh_bench_support::cpu_seconds(std::process::id()) - self.bench_cpu_s;
        lines.push(format!(
            "  simulated agents (this process): CPU {:.1} %",
            bench / secs * 100.0
        ));
        lines
    }

    /// Leader changes on any member since the window opened.
    pub fn leader_changes(&self, cluster: &Cluster) -> f64 {
        let now = cluster.member_figures();
        now.iter()
            .zip(&self.figures)
            .map(|(a, b)| a.leader_changes - b.leader_changes)
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let ms = |n: u64| Duration::from_millis(n);
        let samples: Vec<Duration> = (1..=100).map(ms).collect();
        let s = Spread::of(&samples);
        assert_eq!((s.p50, s.p99, s.max, s.n), (ms(50), ms(99), ms(100), 100));
        let one = Spread::of(&[ms(7)]);
        assert_eq!((one.p50, one.p99, one.max), (ms(7), ms(7), ms(7)));
        assert_eq!(Spread::of(&[]).n, 0);
    }
}
