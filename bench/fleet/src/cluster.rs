//! A 3-member etcd cluster on loopback and etcd's grpc-proxies in front of it, with the figures
//! the report needs from each process (CPU, RSS) and from each member's /metrics.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{AlarmAction, AlarmType, Client};
use hostmesh_bench_support::{Killed, cpu_seconds, free_port, http_get, rss_kib};
use hostmesh_registrar::etcd::launch::Member;

/// The etcd settings a fleet should run with (docs/scale.md says why): an 8 GiB backend quota
/// instead of 2, and history compacted so that the db stays small (periodic, keeping 10 minutes:
/// an agent whose watch broke for less than that resumes without listing everything).
const MEMBER_SETTINGS: &[&str] = &[
    "--quota-backend-bytes=8589934592",
    "--auto-compaction-mode=periodic",
    "--auto-compaction-retention=10m",
];

/// One etcd member or proxy.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    /// `http://127.0.0.1:PORT`, what clients use.
    pub url: String,
    pub proc: Killed,
}

impl Node {
    pub fn usage(&self) -> Usage {
        Usage {
            cpu_s: cpu_seconds(self.proc.pid()),
            rss_kib: rss_kib(self.proc.pid()),
        }
    }
}

/// CPU used so far and resident memory now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu_s: f64,
    pub rss_kib: u64,
}

/// What a member's /metrics says (sums over label sets).
#[derive(Debug, Clone, Copy, Default)]
pub struct MemberFigures {
    /// gRPC messages received: unary requests plus every message on a stream (keep-alives,
    /// watch requests).
    pub messages: f64,
    pub db_bytes: f64,
    pub leader_changes: f64,
    pub has_leader: bool,
    pub watchers: f64,
}

pub struct Cluster {
    pub members: Vec<Node>,
    pub proxies: Vec<Node>,
    /// A client of the members themselves (not through a proxy), for the writer and the checks.
    pub direct: Client,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("members", &self.members)
            .field("proxies", &self.proxies)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Starts `members` members in one cluster and `proxies` grpc-proxies in front of all of
    /// them; returns once each answers a linearizable read.
    pub async fn start(dir: &Path, members: usize, proxies: usize) -> Cluster {
        let ports: Vec<(u16, u16)> = (0..members).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("m{i}=http://127.0.0.1:{peer}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let url = format!("http://127.0.0.1:{client}");
            let peer = format!("http://127.0.0.1:{peer}");
            let data_dir = dir.join(&name);
            let args = Member {
                name: &name,
                data_dir: &data_dir,
                client: &url,
                advertise: &url,
                peer: &peer,
            }
            .args_in(&initial, "fleet");
            let proc = spawn_logged(
                Command::new("etcd").args(args).args(MEMBER_SETTINGS),
                &dir.join(format!("{name}.log")),
                "etcd (Debian package etcd-server)",
            );
            nodes.push(Node { name, url, proc });
        }
        let member_urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();
        for url in &member_urls {
            answers(url, Duration::from_secs(60)).await;
        }
        let mut proxy_nodes = Vec::new();
        let hostports: Vec<&str> = member_urls
            .iter()
            .map(|u| u.trim_start_matches("http://"))
            .collect();
        for i in 0..proxies {
            let name = format!("proxy{i}");
            let listen = format!("127.0.0.1:{}", free_port());
            let proc = spawn_logged(
                Command::new("etcd").args([
                    "grpc-proxy",
                    "start",
                    &format!("--endpoints={}", hostports.join(",")),
                    &format!("--listen-addr={listen}"),
                ]),
                &dir.join(format!("{name}.log")),
                "etcd grpc-proxy",
            );
            let url = format!("http://{listen}");
            answers(&url, Duration::from_secs(30)).await;
            proxy_nodes.push(Node { name, url, proc });
        }
        let direct = Client::connect(&member_urls, None)
            .await
            .expect("a client of the members");
        Cluster {
            members: nodes,
            proxies: proxy_nodes,
            direct,
        }
    }

    /// What agents are given as `etcd.endpoints`: the proxies when there are any.
    pub fn agent_endpoints(&self) -> Vec<String> {
        let nodes = if self.proxies.is_empty() {
            &self.members
        } else {
            &self.proxies
        };
        nodes.iter().map(|n| n.url.clone()).collect()
    }

    pub fn member_figures(&self) -> Vec<MemberFigures> {
        self.members.iter().map(|m| figures(&m.url)).collect()
    }

    /// Alarms raised on any member (NOSPACE, CORRUPT), as `etcdctl alarm list` shows them.
    pub async fn alarms(&self) -> Result<Vec<String>, etcd_client::Error> {
        let resp = self
            .direct
            .maintenance_client()
            .alarm(AlarmAction::Get, AlarmType::None, None)
            .await?;
        Ok(resp
            .alarms()
            .iter()
            .map(|a| format!("member {:x}: {:?}", a.member_id(), a.alarm()))
            .collect())
    }

    /// The members and proxies no longer running (crashed, or killed by the OOM killer).
    pub fn down(&mut self) -> Vec<String> {
        self.members
            .iter_mut()
            .chain(self.proxies.iter_mut())
            .filter_map(|n| (!n.proc.is_running()).then(|| n.name.clone()))
            .collect()
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path, what: &str) -> Killed {
    let file = std::fs::File::create(log).expect("a log file");
    Killed(
        cmd.stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} must be installed: {e}")),
    )
}

/// Waits until `url` answers a linearizable read (a member with a leader, or a proxy in front
/// of one).
async fn answers(url: &str, within: Duration) {
    let started = Instant::now();
    loop {
        if let Ok(mut c) = Client::connect([url], None).await
            && c.get("/", None).await.is_ok()
        {
            return;
        }
        assert!(
            started.elapsed() < within,
            "{url} did not answer within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn figures(url: &str) -> MemberFigures {
    let addr = url.trim_start_matches("http://");
    let Some((200, body)) = http_get(addr, "/metrics") else {
        return MemberFigures::default();
    };
    let sum = |name: &str| -> f64 {
        body.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    MemberFigures {
        messages: sum("grpc_server_msg_received_total"),
        db_bytes: sum("etcd_mvcc_db_total_size_in_bytes"),
        leader_changes: sum("etcd_server_leader_changes_seen_total"),
        has_leader: sum("etcd_server_has_leader") > 0.0,
        watchers: sum("etcd_debugging_mvcc_watcher_total"),
    }
}
