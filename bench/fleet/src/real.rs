//! Real agents (the release binary) beside the simulated ones: their DNS answers are what a
//! host's apps see, timed from outside.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};
use hostmesh_bench_support::{Killed, free_port, http_get};
use tokio::net::UdpSocket;

#[derive(Debug)]
pub struct Real {
    pub name: String,
    pub proc: Killed,
    dns: SocketAddr,
    admin: String,
}

/// What a name resolves to on an agent's DNS shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Address,
    NxDomain,
    /// No answer within 1 s, or another code.
    Other,
}

impl Real {
    /// Starts `hostmesh agent` as host `name` against `endpoints` and waits until `/ready`.
    pub fn start(bin: &Path, name: &str, endpoints: &[String], ttl: Duration, dir: &Path) -> Real {
        let dir = dir.join(name);
        let services = dir.join("services.d");
        std::fs::create_dir_all(&services).expect("services dir");
        let dns = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = format!("127.0.0.1:{}", free_port());
        let endpoints = endpoints
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let config = format!(
            "[agent]\nhost = \"{name}\"\nadvertise_address = \"127.0.0.1\"\nservices_dir = \"{sd}\"\n\
             data_dir = \"{dd}\"\n\
             [etcd]\nendpoints = [{endpoints}]\nlease_ttl = \"{ttl}s\"\n\
             [dns]\nlisten = \"{dns}\"\n\
             [proxy]\ncapture = \"listen\"\noutbound_listen = \"127.0.0.1:{o}\"\n\
             inbound_listen = \"127.0.0.1:{i}\"\n\
             [tls]\nmode = \"disabled\"\n[admin]\nlisten = \"{admin}\"\n[log]\nlevel = \"warn\"\n",
            sd = services.display(),
            dd = dir.join("data").display(),
            ttl = ttl.as_secs(),
            o = free_port(),
            i = free_port(),
        );
        let config_path = dir.join("agent.toml");
        std::fs::write(&config_path, config).expect("agent config");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let proc = Killed(
            Command::new(bin)
                .args(["agent", "--config"])
                .arg(&config_path)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start the agent"),
        );
        let started = Instant::now();
        while http_get(&admin, "/ready").map(|(c, _)| c) != Some(200) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "{name} not ready within 120 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Real {
            name: name.to_owned(),
            proc,
            dns,
            admin,
        }
    }

    /// Where its DNS shim listens, for [`resolve`].
    pub fn dns(&self) -> SocketAddr {
        self.dns
    }

    /// One series' value from the agent's /metrics (0 when absent).
    pub fn sample(&self, series: &str) -> f64 {
        http_get(&self.admin, "/metrics")
            .and_then(|(_, body)| {
                body.lines()
                    .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            })
            .unwrap_or(0.0)
    }
}

/// Asks the DNS shim at `dns` for `name`'s A record.
pub async fn resolve(dns: SocketAddr, name: &str) -> Answer {
    let Ok(name) = Name::from_ascii(name) else {
        return Answer::Other;
    };
    let mut query = Message::query();
    query.metadata.id = 7;
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name, RecordType::A));
    let Ok(packet) = query.to_vec() else {
        return Answer::Other;
    };
    let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
        return Answer::Other;
    };
    if socket.send_to(&packet, dns).await.is_err() {
        return Answer::Other;
    }
    let mut buf = vec![0u8; 1500];
    let Ok(Ok((len, _))) =
        tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf)).await
    else {
        return Answer::Other;
    };
    match Message::from_vec(&buf[..len]) {
        Ok(m) if m.metadata.response_code == ResponseCode::NXDomain => Answer::NxDomain,
        Ok(m) if !m.answers.is_empty() => Answer::Address,
        _ => Answer::Other,
    }
}
