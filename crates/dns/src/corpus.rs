//! The malformed-packet corpus (`tests-data/dns-corpus/`): every file in it is replayed
//! through the pure handler and through a running server's UDP and TCP sockets. Each must get
//! FORMERR, NOTIMP (opcodes other than QUERY) or no answer at all, and the server must answer
//! the next valid query. Files added to the directory later are picked up as they are. The
//! handler is asked with Consul's names off and on, and the server runs with them on; the
//! `consul-*` files carry Consul names.
//!
//! The files themselves come from [`generate`] (`cargo test -p hostmesh dns::corpus::generate
//! -- --ignored` rewrites them); they are kept as bytes so that the replay does not depend on
//! the generator staying the same.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use tokio::net::{TcpStream, UdpSocket};

use super::answer::{Handled, answer_local};
use super::fixture::consul_zone;
use super::server_tests::{Running, query, tcp_read, tcp_send};
use super::table::Table;
use super::table::tests::{snapshot, zone};
use super::wire::Transport;

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests-data/dns-corpus")
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        // Dotfiles (.gitattributes) are not packets.
        .filter(|path| {
            path.is_file() && !path.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .map(|path| {
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= CASES.len(),
        "the corpus in {} has {} files, expected at least {}",
        corpus_dir().display(),
        files.len(),
        CASES.len()
    );
    files
}

/// An acceptable answer to a corpus packet: a response echoing the id, with FORMERR or NOTIMP.
fn check_answer(name: &str, packet: &[u8], answer: &[u8]) {
    assert!(answer.len() >= 12, "{name}: answer shorter than a header");
    assert_eq!(
        &answer[..2],
        &packet[..2],
        "{name}: answer must echo the id"
    );
    assert!(answer[2] & 0x80 != 0, "{name}: answer must be a response");
    let rcode = answer[3] & 0x0f;
    assert!(
        rcode == ResponseCode::FormErr.low() || rcode == ResponseCode::NotImp.low(),
        "{name}: rcode {rcode}, expected FORMERR or NOTIMP"
    );
}

#[test]
fn corpus_through_the_pure_handler() {
    let snap = snapshot();
    let tables = [
        Table::build(zone(), Some(&snap)),
        Table::build(zone(), None),
        Table::build(consul_zone(), Some(&snap)),
        Table::build(consul_zone(), None),
    ];
    for (name, packet) in corpus() {
        for table in &tables {
            for transport in [Transport::Udp, Transport::Tcp] {
                match answer_local(&packet, table, transport) {
                    Handled::Ignore => {}
                    Handled::Reply(reply) => check_answer(&name, &packet, &reply.bytes),
                    Handled::Forward(req) => panic!("{name}: forwarded as {req:?}"),
                }
            }
        }
    }
}

const PROBE_ID: u16 = 0xbeef;

fn is_probe_answer(m: &Message) -> bool {
    m.metadata.id == PROBE_ID
        && m.queries.first().map(|q| q.name().to_ascii()) == Some("orders.mesh.".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corpus_through_a_running_server() {
    let dns = Running::start_consul(vec![], Some(snapshot())).await;
    let probe = query(PROBE_ID, "orders.mesh.", RecordType::A, None);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut tcp = TcpStream::connect(dns.addr).await.unwrap();
    let mut buf = vec![0u8; 65_535];

    for (name, packet) in corpus() {
        // UDP: the packet, then a valid query; everything before the valid query's answer
        // (and a little after, as workers run in parallel) is the packet's answer.
        socket.send_to(&packet, dns.addr).await.unwrap();
        socket.send_to(&probe, dns.addr).await.unwrap();
        let mut others = Vec::new();
        let mut probe_answered = false;
        loop {
            let wait = if probe_answered {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(5)
            };
            let Ok(received) = tokio::time::timeout(wait, socket.recv_from(&mut buf)).await else {
                assert!(
                    probe_answered,
                    "{name}: the server stopped answering over udp"
                );
                break;
            };
            let (len, _) = received.unwrap();
            let bytes = buf[..len].to_vec();
            match Message::from_vec(&bytes) {
                Ok(m) if is_probe_answer(&m) && !probe_answered => {
                    assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
                    assert_eq!(m.answers.len(), 1, "{name}");
                    probe_answered = true;
                }
                _ => others.push(bytes),
            }
        }
        assert!(
            others.len() <= 1,
            "{name}: {} answers over udp",
            others.len()
        );
        for answer in &others {
            check_answer(&name, &packet, answer);
        }

        // TCP, on one connection for the whole corpus: answers come back in order, so the
        // frame before the probe's answer, if any, is the packet's.
        tcp_send(&mut tcp, &packet).await;
        tcp_send(&mut tcp, &probe).await;
        let first = tcp_read_raw(&mut tcp).await;
        let probe_answer = match Message::from_vec(&first) {
            Ok(m) if is_probe_answer(&m) => m,
            _ => {
                check_answer(&name, &packet, &first);
                tcp_read(&mut tcp).await
            }
        };
        assert!(is_probe_answer(&probe_answer), "{name}: over tcp");
        assert_eq!(probe_answer.answers.len(), 1, "{name}: over tcp");
    }
    dns.stop().await;
}

async fn tcp_read_raw(stream: &mut TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let read = async {
        let len = stream.read_u16().await.unwrap();
        let mut buf = vec![0u8; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        buf
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .expect("an answer over tcp")
}

// ---- the generator ----

const RD: u16 = 0x0100;
const TYPE_A: u16 = 1;
const TYPE_SOA: u16 = 6;
const TYPE_SRV: u16 = 33;
const TYPE_OPT: u16 = 41;

fn header(id: u16, flags: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = Vec::with_capacity(12);
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags.to_be_bytes());
    for count in counts {
        h.extend_from_slice(&count.to_be_bytes());
    }
    h
}

fn wire_name(labels: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for label in labels {
        out.push(u8::try_from(label.len()).unwrap());
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

fn type_class(qtype: u16) -> Vec<u8> {
    let mut out = qtype.to_be_bytes().to_vec();
    out.extend_from_slice(&1u16.to_be_bytes());
    out
}

fn question(labels: &[&[u8]], qtype: u16) -> Vec<u8> {
    let mut out = wire_name(labels);
    out.extend(type_class(qtype));
    out
}

/// An OPT record: root owner, type 41, class = payload size, TTL 0, no options.
fn opt(payload: u16) -> Vec<u8> {
    let mut out = vec![0];
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    out
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// Fixed-seed xorshift: reproducible "random" bytes without a dependency.
fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_be_bytes()[0]
        })
        .collect()
}

const ORDERS: &[&[u8]] = &[b"orders", b"mesh"];
const CONSUL_SRV: &[&[u8]] = &[b"_orders", b"_tcp", b"service", b"consul"];

type Case = (&'static str, fn() -> Vec<u8>);

const CASES: &[Case] = &[
    ("empty.bin", Vec::new),
    ("truncated-header.bin", || {
        header(0x0101, RD, [1, 0, 0, 0])[..5].to_vec()
    }),
    ("qdcount-0.bin", || header(0x0102, RD, [0, 0, 0, 0])),
    ("qdcount-65535.bin", || {
        cat(&[
            &header(0x0103, RD, [65535, 0, 0, 0]),
            &question(ORDERS, TYPE_A),
        ])
    }),
    ("qdcount-2.bin", || {
        let q = question(ORDERS, TYPE_A);
        cat(&[&header(0x0104, RD, [2, 0, 0, 0]), &q, &q])
    }),
    // The name at offset 12 is a pointer to offset 12: itself.
    ("pointer-loop.bin", || {
        cat(&[
            &header(0x0105, RD, [1, 0, 0, 0]),
            &[0xc0, 12],
            &type_class(TYPE_A),
        ])
    }),
    // A label, then a pointer back to the start of the same name.
    ("pointer-loop-via-label.bin", || {
        cat(&[
            &header(0x0106, RD, [1, 0, 0, 0]),
            &[1, b'a', 0xc0, 12],
            &type_class(TYPE_A),
        ])
    }),
    // Two pointers pointing at each other.
    ("pointer-loop-pair.bin", || {
        cat(&[
            &header(0x0107, RD, [1, 0, 0, 0]),
            &[0xc0, 14, 0xc0, 12],
            &type_class(TYPE_A),
        ])
    }),
    ("pointer-past-end.bin", || {
        cat(&[
            &header(0x0108, RD, [1, 0, 0, 0]),
            &[0xff, 0xff],
            &type_class(TYPE_A),
        ])
    }),
    ("label-64.bin", || {
        let mut name = vec![64];
        name.extend_from_slice(&[b'a'; 64]);
        name.extend(wire_name(&[b"mesh"]));
        cat(&[
            &header(0x0109, RD, [1, 0, 0, 0]),
            &name,
            &type_class(TYPE_A),
        ])
    }),
    ("name-300.bin", || {
        let label = [b'a'; 59];
        let labels: Vec<&[u8]> = vec![&label; 5];
        cat(&[
            &header(0x010a, RD, [1, 0, 0, 0]),
            &question(&labels, TYPE_A),
        ])
    }),
    ("label-type-reserved.bin", || {
        cat(&[
            &header(0x010b, RD, [1, 0, 0, 0]),
            &[0x80, b'a', 0],
            &type_class(TYPE_A),
        ])
    }),
    ("two-opt.bin", || {
        cat(&[
            &header(0x010c, RD, [1, 0, 0, 2]),
            &question(ORDERS, TYPE_A),
            &opt(1232),
            &opt(1232),
        ])
    }),
    ("opt-in-answer-section.bin", || {
        cat(&[
            &header(0x010d, RD, [1, 1, 0, 0]),
            &question(ORDERS, TYPE_A),
            &opt(1232),
        ])
    }),
    ("opt-rdlength-past-end.bin", || {
        let mut bad = opt(1232);
        let len = bad.len();
        bad[len - 2..].copy_from_slice(&10u16.to_be_bytes());
        cat(&[
            &header(0x010e, RD, [1, 0, 0, 1]),
            &question(ORDERS, TYPE_A),
            &bad,
        ])
    }),
    ("qtype-opt.bin", || {
        cat(&[
            &header(0x010f, RD, [1, 0, 0, 0]),
            &question(ORDERS, TYPE_OPT),
        ])
    }),
    ("question-cut-short.bin", || {
        cat(&[&header(0x0110, RD, [1, 0, 0, 0]), &[6, b'o', b'r', b'd']])
    }),
    ("question-without-type.bin", || {
        cat(&[&header(0x0111, RD, [1, 0, 0, 0]), &wire_name(ORDERS)])
    }),
    ("arcount-without-records.bin", || {
        cat(&[&header(0x0112, RD, [1, 0, 0, 5]), &question(ORDERS, TYPE_A)])
    }),
    ("ancount-65535.bin", || {
        cat(&[
            &header(0x0113, RD, [1, 65535, 0, 0]),
            &question(ORDERS, TYPE_A),
        ])
    }),
    ("random-512.bin", || pseudo_random(0x5eed_0001, 512)),
    ("random-12.bin", || {
        let mut bytes = pseudo_random(0x5eed_0002, 12);
        bytes[2] &= 0x7f; // a query header, so the handler gets past the QR check
        bytes
    }),
    // A well-formed response (QR=1): never answered, so two servers cannot ping-pong.
    ("response-qr1.bin", || {
        let mut answer = wire_name(ORDERS);
        answer.extend(type_class(TYPE_A));
        answer.extend_from_slice(&[0, 0, 0, 5, 0, 4, 127, 77, 0, 1]);
        cat(&[
            &header(0x0114, 0x8180, [1, 1, 0, 0]),
            &question(ORDERS, TYPE_A),
            &answer,
        ])
    }),
    ("opcode-update.bin", || {
        cat(&[
            &header(0x0115, 5 << 11, [1, 0, 0, 0]),
            &question(&[b"mesh"], TYPE_SOA),
        ])
    }),
    ("opcode-15.bin", || {
        cat(&[
            &header(0x0116, 15 << 11 | RD, [1, 0, 0, 0]),
            &question(ORDERS, TYPE_A),
        ])
    }),
    // Consul names, malformed around them.
    ("consul-label-64.bin", || {
        let mut name = vec![64];
        name.extend_from_slice(&[b'a'; 64]);
        name.extend(wire_name(&[b"service", b"consul"]));
        cat(&[
            &header(0x0117, RD, [1, 0, 0, 0]),
            &name,
            &type_class(TYPE_A),
        ])
    }),
    // 256 bytes: one too many for a name, ending in node.consul.
    ("consul-node-name-256.bin", || {
        let label = [b'a'; 61];
        let mut labels: Vec<&[u8]> = vec![&label; 3];
        labels.extend_from_slice(&[&[b'b'; 56], b"node", b"consul"]);
        cat(&[
            &header(0x0118, RD, [1, 0, 0, 0]),
            &question(&labels, TYPE_A),
        ])
    }),
    ("consul-qtype-opt.bin", || {
        cat(&[
            &header(0x0119, RD, [1, 0, 0, 0]),
            &question(CONSUL_SRV, TYPE_OPT),
        ])
    }),
    ("consul-qdcount-2.bin", || {
        let q = question(CONSUL_SRV, TYPE_SRV);
        cat(&[&header(0x011a, RD, [2, 0, 0, 0]), &q, &q])
    }),
    // `service.consul` reached through a pointer into itself.
    ("consul-pointer-loop.bin", || {
        cat(&[
            &header(0x011b, RD, [1, 0, 0, 0]),
            &[6],
            b"orders",
            &[7],
            b"service",
            &[0xc0, 12],
            &type_class(TYPE_SRV),
        ])
    }),
];

/// Writes the corpus files. Run with `--ignored` after changing [`CASES`]; commit the result.
#[test]
#[ignore]
fn generate() {
    let dir = corpus_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let snap = snapshot();
    let table = Table::build(zone(), Some(&snap));
    for (name, make) in CASES {
        let bytes = make();
        // Each case must really be malformed for this handler, or it does not belong here.
        match answer_local(&bytes, &table, Transport::Udp) {
            Handled::Ignore => eprintln!("{name}: no answer"),
            Handled::Reply(reply) => {
                check_answer(name, &bytes, &reply.bytes);
                eprintln!("{name}: {:?}", reply.outcome);
            }
            Handled::Forward(req) => panic!("{name}: forwarded as {req:?}"),
        }
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// The committed files are what the generator makes (a changed generator without
/// regenerated files would otherwise go unnoticed).
#[test]
fn committed_corpus_matches_the_generator() {
    for (name, make) in CASES {
        let path = corpus_dir().join(name);
        let on_disk = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run the ignored `generate` test", path.display()));
        assert_eq!(on_disk, make(), "{name}: regenerate the corpus");
    }
}
