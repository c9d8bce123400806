//! The server over real sockets on 127.0.0.1: UDP and TCP framing, catalog swaps, forwarding
//! to a fake upstream (including a large answer that needs TC over UDP and arrives whole over
//! TCP), REFUSED without upstreams, SERVFAIL when the upstream is down.

#![allow(clippy::unwrap_used)]

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use hostmesh_registrar::catalog::Snapshot;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::DnsServer;
use super::metrics::{DnsMetrics, Outcome, QType};
use super::server::Limits;
use super::table::tests::snapshot;
use hostmesh_config::{DnsSection, Upstream};

const WAIT: Duration = Duration::from_secs(5);

pub(crate) fn section(upstream: Vec<Upstream>) -> DnsSection {
    DnsSection {
        listen: "127.0.0.1:0".parse().unwrap(),
        domain: "mesh".into(),
        vip_range: "127.77.0.0/16".parse().unwrap(),
        ttl: Duration::from_secs(5),
        upstream,
        consul: false,
    }
}

pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) catalog: watch::Sender<Option<Arc<Snapshot>>>,
    pub(crate) metrics: DnsMetrics,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl Running {
    pub(crate) async fn start(upstream: Vec<Upstream>, initial: Option<Snapshot>) -> Running {
        Self::start_limited(section(upstream), initial, None).await
    }

    /// As [`Running::start`], answering Consul's names too (`dns.consul = true`).
    pub(crate) async fn start_consul(
        upstream: Vec<Upstream>,
        initial: Option<Snapshot>,
    ) -> Running {
        let section = DnsSection {
            consul: true,
            ..section(upstream)
        };
        Self::start_limited(section, initial, None).await
    }

    async fn start_limited(
        section: DnsSection,
        initial: Option<Snapshot>,
        limits: Option<Limits>,
    ) -> Running {
        let metrics = DnsMetrics::unregistered();
        let mut server = DnsServer::bind_with(&section, metrics.clone(), None)
            .await
            .unwrap();
        if let Some(limits) = limits {
            server.limits = limits;
        }
        let addr = server.local_addr();
        let (catalog, snapshots) = watch::channel(initial.map(Arc::new));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(server.run(snapshots, cancel.clone()));
        Running {
            addr,
            catalog,
            metrics,
            cancel,
            task,
        }
    }

    pub(crate) async fn stop(self) {
        self.cancel.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run returns promptly after cancel")
            .unwrap();
    }
}

pub(crate) fn query(id: u16, name: &str, rtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), rtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

pub(crate) async fn udp_ask(addr: SocketAddr, packet: &[u8]) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(packet, addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (len, _) = tokio::time::timeout(WAIT, socket.recv_from(&mut buf))
        .await
        .expect("an answer over udp")
        .unwrap();
    assert!(len <= 1232, "udp answers stay within 1232 bytes, got {len}");
    Message::from_vec(&buf[..len]).unwrap()
}

pub(crate) async fn tcp_send(stream: &mut TcpStream, packet: &[u8]) {
    let mut frame = u16::try_from(packet.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(packet);
    stream.write_all(&frame).await.unwrap();
}

pub(crate) async fn tcp_read(stream: &mut TcpStream) -> Message {
    let read = async {
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    let buf = tokio::time::timeout(WAIT, read)
        .await
        .expect("an answer over tcp");
    Message::from_vec(&buf).unwrap()
}

async fn tcp_ask(addr: SocketAddr, packet: &[u8]) -> Message {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    tcp_send(&mut stream, packet).await;
    tcp_read(&mut stream).await
}

fn a_of(m: &Message) -> Vec<Ipv4Addr> {
    a_in(&m.answers)
}

fn a_in(records: &[Record]) -> Vec<Ipv4Addr> {
    records
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(*ip),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_names_answer_only_when_the_section_turns_them_on() {
    let on = Running::start_consul(vec![], Some(snapshot())).await;
    let packet = query(1, "orders.service.consul.", RecordType::A, None);
    let m = udp_ask(on.addr, &packet).await;
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(127, 77, 0, 1)]);
    let m = tcp_ask(
        on.addr,
        &query(2, "web-01.node.consul.", RecordType::A, None),
    )
    .await;
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(10, 0, 0, 1)]);
    on.stop().await;

    // Off (the default) and nowhere to forward: REFUSED, as for any other name.
    let off = Running::start(vec![], Some(snapshot())).await;
    let m = udp_ask(off.addr, &packet).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    off.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_mesh_names_over_udp_and_tcp() {
    let dns = Running::start(vec![], Some(snapshot())).await;
    let vip = Ipv4Addr::new(127, 77, 0, 1);

    let m = udp_ask(dns.addr, &query(1, "Orders.Mesh.", RecordType::A, None)).await;
    assert_eq!(m.metadata.id, 1);
    assert_eq!(a_of(&m), vec![vip]);
    assert_eq!(m.answers[0].name.to_ascii(), "Orders.Mesh.");

    let m = tcp_ask(dns.addr, &query(2, "orders.mesh.", RecordType::A, None)).await;
    assert_eq!(a_of(&m), vec![vip]);

    // Several queries on one connection, sent before reading any answer.
    let mut stream = TcpStream::connect(dns.addr).await.unwrap();
    for (id, name) in [
        (10, "orders.mesh."),
        (11, "v2.orders.mesh."),
        (12, "nope.mesh."),
    ] {
        tcp_send(&mut stream, &query(id, name, RecordType::A, None)).await;
    }
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = tcp_read(&mut stream).await;
        got.push((m.metadata.id, m.metadata.response_code, a_of(&m)));
    }
    got.sort_by_key(|g| g.0);
    assert_eq!(
        got,
        vec![
            (10, ResponseCode::NoError, vec![vip]),
            (
                11,
                ResponseCode::NoError,
                vec![Ipv4Addr::new(127, 77, 0, 2)]
            ),
            (12, ResponseCode::NXDomain, vec![]),
        ]
    );

    let m = udp_ask(
        dns.addr,
        &query(3, "_orders._tcp.mesh.", RecordType::SRV, Some(1232)),
    )
    .await;
    assert_eq!(m.answers.len(), 2);
    assert_eq!(a_in(&m.additionals), vec![vip]);
    assert!(m.edns.is_some());

    // Out of domain without upstreams: REFUSED.
    let m = udp_ask(dns.addr, &query(4, "example.com.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);

    assert_eq!(dns.metrics.count(QType::A, Outcome::Answered), 4);
    assert_eq!(dns.metrics.count(QType::A, Outcome::NxDomain), 1);
    assert_eq!(dns.metrics.count(QType::A, Outcome::Refused), 1);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_catalog() {
    let dns = Running::start(vec![], None).await;
    let ask = |id| query(id, "payments.mesh.", RecordType::A, None);
    let m = udp_ask(dns.addr, &ask(1)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);

    dns.catalog.send_replace(Some(Arc::new(snapshot())));
    let answered = async {
        loop {
            let m = udp_ask(dns.addr, &ask(2)).await;
            if m.metadata.response_code == ResponseCode::NoError {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let m = tokio::time::timeout(WAIT, answered).await.unwrap();
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(127, 77, 0, 3)]);

    let mut gone = snapshot();
    gone.services.remove("payments");
    gone.revision += 1;
    dns.catalog.send_replace(Some(Arc::new(gone)));
    let nxdomain = async {
        loop {
            let m = udp_ask(dns.addr, &ask(3)).await;
            if m.metadata.response_code == ResponseCode::NXDomain {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let m = tokio::time::timeout(WAIT, nxdomain).await.unwrap();
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_failure_is_an_error() {
    let dns = Running::start(vec![], None).await;
    let mut taken = section(vec![]);
    taken.listen = dns.addr;
    let err = DnsServer::bind_with(&taken, DnsMetrics::unregistered(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&dns.addr.to_string()), "{err}");
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_tcp_client_stalls_nobody() {
    let dns = Running::start(vec![], Some(snapshot())).await;
    // Half a length prefix, then silence; and a client that never reads its answers.
    let mut stalled = TcpStream::connect(dns.addr).await.unwrap();
    stalled.write_all(&[0]).await.unwrap();
    let mut deaf = TcpStream::connect(dns.addr).await.unwrap();
    let q = query(1, "orders.mesh.", RecordType::A, None);
    for _ in 0..200 {
        tcp_send(&mut deaf, &q).await;
    }
    let m = udp_ask(dns.addr, &q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let m = tcp_ask(dns.addr, &q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    dns.stop().await;
}

/// A fake upstream on UDP and TCP of one port: `big.example.` has 100 A records (so UDP
/// answers it with TC=1), `nx.example.` is NXDOMAIN with an SOA, anything else is 192.0.2.1.
struct FakeUpstream {
    addr: SocketAddr,
    udp_queries: Arc<AtomicUsize>,
    tcp_queries: Arc<AtomicUsize>,
}

fn fake_answer(packet: &[u8], udp: bool) -> Option<Vec<u8>> {
    let q = Message::from_vec(packet).ok()?;
    let query = q.queries.first()?.clone();
    let mut m = Message::response(q.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = q.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_query(query.clone());
    if q.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        m.set_edns(e);
    }
    let name = query.name().clone();
    let lower = name.to_ascii().to_ascii_lowercase();
    if lower == "nx.example." {
        m.metadata.response_code = ResponseCode::NXDomain;
        m.add_authority(Record::from_rdata(
            Name::from_ascii("example.").unwrap(),
            30,
            RData::SOA(SOA::new(
                Name::from_ascii("ns.example.").unwrap(),
                Name::from_ascii("root.example.").unwrap(),
                7,
                1,
                1,
                1,
                30,
            )),
        ));
    } else if query.query_type() == RecordType::A {
        let count = if lower == "big.example." { 100 } else { 1 };
        for i in 0..count {
            m.add_answer(Record::from_rdata(
                name.clone(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, i + 1))),
            ));
        }
    }
    let bytes = m.to_vec().ok()?;
    let limit = q
        .edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload().max(512)));
    if udp && bytes.len() > limit {
        return m.truncate().to_vec().ok();
    }
    Some(bytes)
}

impl FakeUpstream {
    async fn start() -> FakeUpstream {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(addr).await.unwrap();
        let udp_queries = Arc::new(AtomicUsize::new(0));
        let tcp_queries = Arc::new(AtomicUsize::new(0));
        let counter = udp_queries.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, peer)) = udp.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                if let Some(answer) = fake_answer(&buf[..len], true) {
                    let _ = udp.send_to(&answer, peer).await;
                }
            }
        });
        let counter = tcp_queries.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    while let Ok(len) = stream.read_u16().await {
                        let mut buf = vec![0u8; usize::from(len)];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let Some(answer) = fake_answer(&buf, false) else {
                            continue;
                        };
                        let mut frame = u16::try_from(answer.len()).unwrap().to_be_bytes().to_vec();
                        frame.extend_from_slice(&answer);
                        if stream.write_all(&frame).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        FakeUpstream {
            addr,
            udp_queries,
            tcp_queries,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_out_of_domain_names() {
    let upstream = FakeUpstream::start().await;
    let dns = Running::start(vec![Upstream::Addr(upstream.addr)], Some(snapshot())).await;

    let m = udp_ask(dns.addr, &query(1, "www.example.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.recursion_available);
    assert!(!m.metadata.authoritative);
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(192, 0, 2, 1)]);
    assert!(m.answers[0].ttl <= 60);

    let m = tcp_ask(dns.addr, &query(2, "www2.example.", RecordType::A, None)).await;
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(192, 0, 2, 1)]);

    // NXDOMAIN relayed with the upstream's SOA, for negative caching.
    let m = udp_ask(dns.addr, &query(3, "nx.example.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities.len(), 1);
    assert!(matches!(m.authorities[0].data, RData::SOA(_)));

    // NODATA relayed as NOERROR with no answers.
    let m = udp_ask(dns.addr, &query(4, "www.example.", RecordType::AAAA, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());

    // Mesh names are still ours, with RA now set.
    let m = udp_ask(dns.addr, &query(5, "orders.mesh.", RecordType::A, None)).await;
    assert!(m.metadata.authoritative && m.metadata.recursion_available);
    assert_eq!(a_of(&m), vec![Ipv4Addr::new(127, 77, 0, 1)]);

    assert_eq!(dns.metrics.count(QType::A, Outcome::Forwarded), 3);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_forwarded_answer_is_truncated_over_udp_and_whole_over_tcp() {
    let upstream = FakeUpstream::start().await;
    let dns = Running::start(vec![Upstream::Addr(upstream.addr)], Some(snapshot())).await;

    for edns in [None, Some(4096)] {
        let m = udp_ask(dns.addr, &query(1, "big.example.", RecordType::A, edns)).await;
        assert!(m.metadata.truncation, "TC=1 over udp (edns {edns:?})");
        assert!(m.answers.is_empty());
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    }
    // Upstream was asked over UDP, answered TC, and the resolver retried over TCP.
    assert!(upstream.udp_queries.load(Ordering::SeqCst) >= 1);
    assert!(upstream.tcp_queries.load(Ordering::SeqCst) >= 1);

    let m = tcp_ask(
        dns.addr,
        &query(2, "big.example.", RecordType::A, Some(4096)),
    )
    .await;
    assert!(!m.metadata.truncation);
    assert_eq!(a_of(&m).len(), 100);
    assert_eq!(dns.metrics.count(QType::A, Outcome::Truncated), 2);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_gives_servfail() {
    // A port nobody listens on: UDP gets ICMP unreachable, TCP gets refused.
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap()
    };
    let dns = Running::start(vec![Upstream::Addr(closed)], Some(snapshot())).await;
    let started = std::time::Instant::now();
    let m = udp_ask(dns.addr, &query(1, "www.example.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(started.elapsed() <= super::forward::FORWARD_DEADLINE + Duration::from_secs(1));
    assert_eq!(dns.metrics.count(QType::A, Outcome::UpstreamError), 1);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_flight_bound_drops_udp_and_servfails_tcp_but_mesh_names_still_answer() {
    // An upstream that never answers keeps every forwarded query in flight.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let limits = Limits {
        in_flight: 2,
        tcp_connections: 8,
    };
    let dns = Running::start_limited(
        section(vec![Upstream::Addr(silent.local_addr().unwrap())]),
        Some(snapshot()),
        Some(limits),
    )
    .await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for id in 0..5 {
        let q = query(id, &format!("n{id}.example."), RecordType::A, None);
        client.send_to(&q, dns.addr).await.unwrap();
    }
    let dropped = async {
        while dns.metrics.count(QType::A, Outcome::Dropped) < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(WAIT, dropped).await.unwrap();

    let m = tcp_ask(dns.addr, &query(9, "more.example.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(dns.metrics.count(QType::A, Outcome::Dropped), 4);

    let m = udp_ask(dns.addr, &query(10, "orders.mesh.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    dns.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_tcp_connection_limit_the_idlest_makes_room() {
    let limits = Limits {
        in_flight: 8,
        tcp_connections: 2,
    };
    let dns = Running::start_limited(section(vec![]), Some(snapshot()), Some(limits)).await;
    let q = query(1, "orders.mesh.", RecordType::A, None);
    let mut first = TcpStream::connect(dns.addr).await.unwrap();
    let mut second = TcpStream::connect(dns.addr).await.unwrap();
    // Both are served (and so both hold a slot), the first idle longer.
    for stream in [&mut first, &mut second] {
        tcp_send(stream, &q).await;
        assert_eq!(tcp_read(stream).await.answers.len(), 1);
    }
    // A third client takes the place of the first (RFC 7766 §6.2.3), and is served.
    let mut third = TcpStream::connect(dns.addr).await.unwrap();
    let mut byte = [0u8; 1];
    let closed = tokio::time::timeout(WAIT, first.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(closed, Ok(0) | Err(_)),
        "the idlest connection is closed"
    );
    for stream in [&mut third, &mut second] {
        tcp_send(stream, &q).await;
        assert_eq!(tcp_read(stream).await.answers.len(), 1);
    }
    dns.stop().await;
}
