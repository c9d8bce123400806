//! Reading a query off the wire and writing an answer that fits the transport.
//!
//! The 12-byte header is checked by hand before hickory decodes anything: responses are never
//! answered (no reflection loops between two DNS speakers), and a question count other than 1
//! is refused before a decoder would size buffers from it. Everything else that is malformed
//! (pointer loops, labels over 63, names over 255, two OPT records, short packets) is left to
//! hickory's decoder, whose error becomes a header-only FORMERR.

use hickory_proto::op::{Edns, Message, OpCode, Query, ResponseCode};

use super::metrics::Outcome;

/// The largest UDP answer we send whatever the client advertises: the DNS flag day 2020 value,
/// which avoids IP fragmentation on any path.
pub(crate) const MAX_UDP_PAYLOAD: u16 = 1232;
/// Without EDNS a UDP answer is limited to 512 bytes (RFC 1035).
const CLASSIC_UDP_PAYLOAD: u16 = 512;
const HEADER_LEN: usize = 12;

/// How a query arrived, which bounds the size of its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A well-formed standard query with exactly one question.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) id: u16,
    pub(crate) recursion_desired: bool,
    pub(crate) checking_disabled: bool,
    /// The question as asked, letter case included.
    pub(crate) query: Query,
    /// The client's EDNS, if it sent one.
    pub(crate) edns: Option<ClientEdns>,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientEdns {
    pub(crate) max_payload: u16,
    pub(crate) version: u8,
}

/// Why a packet is not a [`Request`].
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Send nothing: too short to carry an id, or a response.
    Ignore,
    /// Send these bytes (a header-only error).
    Reply(Vec<u8>, Outcome),
}

pub(crate) fn parse(packet: &[u8]) -> Result<Request, Rejected> {
    let Some(header) = packet.get(..HEADER_LEN) else {
        return Err(Rejected::Ignore);
    };
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags = header[2];
    if flags & 0x80 != 0 {
        return Err(Rejected::Ignore);
    }
    let opcode = (flags >> 3) & 0x0f;
    let rd = flags & 0x01 != 0;
    if opcode != 0 {
        return Err(Rejected::Reply(
            header_only(id, opcode, rd, ResponseCode::NotImp),
            Outcome::NotImp,
        ));
    }
    let formerr = || {
        Rejected::Reply(
            header_only(id, opcode, rd, ResponseCode::FormErr),
            Outcome::FormErr,
        )
    };
    if u16::from_be_bytes([header[4], header[5]]) != 1 {
        return Err(formerr());
    }
    let mut message = Message::from_vec(packet).map_err(|_| formerr())?;
    let Some(query) = message.queries.pop() else {
        return Err(formerr());
    };
    Ok(Request {
        id,
        recursion_desired: message.metadata.recursion_desired,
        checking_disabled: message.metadata.checking_disabled,
        query,
        edns: message.edns.as_ref().map(|e| ClientEdns {
            max_payload: e.max_payload(),
            version: e.version(),
        }),
    })
}

/// A response header with no sections, echoing id, opcode and RD.
pub(crate) fn header_only(id: u16, opcode: u8, rd: bool, rcode: ResponseCode) -> Vec<u8> {
    let [hi, lo] = id.to_be_bytes();
    let flags = 0x80 | ((opcode & 0x0f) << 3) | u8::from(rd);
    vec![hi, lo, flags, rcode.low() & 0x0f, 0, 0, 0, 0, 0, 0, 0, 0]
}

impl Request {
    /// An empty response to this request: id, RD, CD and the question echoed, OPT included when
    /// the query had one.
    pub(crate) fn response(&self, rcode: ResponseCode) -> Message {
        let mut message = Message::response(self.id, OpCode::Query);
        message.metadata.recursion_desired = self.recursion_desired;
        message.metadata.checking_disabled = self.checking_disabled;
        message.metadata.response_code = rcode;
        message.add_query(self.query.clone());
        if self.edns.is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(MAX_UDP_PAYLOAD);
            edns.set_version(0);
            message.set_edns(edns);
        }
        message
    }

    /// The largest answer this client takes over `transport`.
    pub(crate) fn limit(&self, transport: Transport) -> usize {
        match transport {
            Transport::Tcp => usize::from(u16::MAX),
            Transport::Udp => usize::from(match self.edns {
                Some(edns) => edns.max_payload.clamp(CLASSIC_UDP_PAYLOAD, MAX_UDP_PAYLOAD),
                None => CLASSIC_UDP_PAYLOAD,
            }),
        }
    }

    /// Encodes `message` to fit the transport. Returns the bytes and whether they were
    /// truncated (TC=1).
    ///
    /// Too large: first the additional section goes (RFC 2181 §9: optional data, no TC
    /// needed); if still too large, the answer becomes header + question (+ OPT) with TC=1, and
    /// never a partial RRset, so the client retries over TCP and gets all of it.
    pub(crate) fn encode(&self, mut message: Message, transport: Transport) -> (Vec<u8>, bool) {
        let limit = self.limit(transport);
        match message.to_vec() {
            Ok(bytes) if bytes.len() <= limit => return (bytes, false),
            Ok(_) => {}
            Err(_) => return (self.servfail_bytes(), false),
        }
        if !message.additionals.is_empty() {
            message.additionals.clear();
            if let Ok(bytes) = message.to_vec()
                && bytes.len() <= limit
            {
                return (bytes, false);
            }
        }
        match message.truncate().to_vec() {
            Ok(bytes) if bytes.len() <= limit => (bytes, true),
            _ => (self.servfail_bytes(), false),
        }
    }

    fn servfail_bytes(&self) -> Vec<u8> {
        header_only(self.id, 0, self.recursion_desired, ResponseCode::ServFail)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hickory_proto::op::MessageType;
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
    use std::net::Ipv4Addr;

    fn query(name: &str, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 7;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn big_answer(req: &Request, n: u8) -> Message {
        let mut m = req.response(ResponseCode::NoError);
        for i in 0..n {
            m.add_answer(Record::from_rdata(
                req.query.name().clone(),
                5,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        m
    }

    #[test]
    fn parses_a_plain_query() {
        let req = parse(&query("Orders.mesh.", None)).unwrap();
        assert_eq!(req.id, 7);
        assert!(req.recursion_desired);
        assert_eq!(req.query.name().to_ascii(), "Orders.mesh.");
        assert!(req.edns.is_none());
        assert_eq!(req.limit(Transport::Udp), 512);
        assert_eq!(req.limit(Transport::Tcp), 65535);
    }

    #[test]
    fn edns_size_is_capped() {
        assert_eq!(
            parse(&query("a.", Some(4096)))
                .unwrap()
                .limit(Transport::Udp),
            1232
        );
        assert_eq!(
            parse(&query("a.", Some(100)))
                .unwrap()
                .limit(Transport::Udp),
            512
        );
        assert_eq!(
            parse(&query("a.", Some(900)))
                .unwrap()
                .limit(Transport::Udp),
            900
        );
    }

    #[test]
    fn responses_and_short_packets_are_ignored() {
        assert!(matches!(parse(&[]), Err(Rejected::Ignore)));
        assert!(matches!(parse(&[1, 2, 3, 4, 5]), Err(Rejected::Ignore)));
        let mut response = query("a.", None);
        response[2] |= 0x80;
        assert!(matches!(parse(&response), Err(Rejected::Ignore)));
    }

    #[test]
    fn header_only_errors_echo_the_id() {
        let mut q = query("a.", None);
        q[5] = 0; // qdcount 0
        let Err(Rejected::Reply(bytes, Outcome::FormErr)) = parse(&q) else {
            panic!()
        };
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
        assert!(m.metadata.recursion_desired);
    }

    #[test]
    fn oversized_udp_answers_are_truncated_whole() {
        let req = parse(&query("big.example.", None)).unwrap();
        let (bytes, truncated) = req.encode(big_answer(&req, 40), Transport::Udp);
        assert!(truncated);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
        assert_eq!(m.queries.len(), 1);
        let (bytes, truncated) = req.encode(big_answer(&req, 40), Transport::Tcp);
        assert!(!truncated);
        assert_eq!(Message::from_vec(&bytes).unwrap().answers.len(), 40);
    }

    #[test]
    fn additionals_go_before_truncating() {
        let req = parse(&query("big.example.", None)).unwrap();
        let mut m = big_answer(&req, 20);
        for i in 0..20 {
            m.add_additional(Record::from_rdata(
                Name::from_ascii("other.example.").unwrap(),
                5,
                RData::A(A(Ipv4Addr::new(10, 1, 0, i))),
            ));
        }
        let (bytes, truncated) = req.encode(m, Transport::Udp);
        assert!(!truncated);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.answers.len(), 20);
        assert!(m.additionals.is_empty());
        assert!(!m.metadata.truncation);
    }
}
