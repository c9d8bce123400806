//! Responses the agent makes itself (docs/reference/http.md): a status, `x-hostmesh-error: <reason>`,
//! and for gRPC services a trailers-only response with the matching `grpc-status`, since gRPC
//! clients ignore the HTTP status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use crate::body::ProxyBody;
use hostmesh_wire as wire;

/// The status a request whose client left before its answer is counted and logged with: nginx's
/// "client closed request". No client ever receives it.
pub const CLIENT_CLOSED: StatusCode = match StatusCode::from_u16(499) {
    Ok(s) => s,
    Err(_) => panic!("499 is a status code"),
};

/// Why the agent answered instead of an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No passing, un-ejected instance.
    NoEndpoints,
    /// The deadline passed before response headers arrived.
    DeadlineExceeded,
    /// Every attempt failed to connect.
    UpstreamUnreachable,
    /// The instance took the request and dropped it.
    UpstreamReset,
    /// From the peer agent: it has no such instance.
    NoLocalInstance,
    /// A request the agent cannot route (malformed, unknown VIP, bad protocol header).
    BadRequest,
    /// The service's access policy does not allow the calling host.
    Forbidden,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NoEndpoints => "no-endpoints",
            Reason::DeadlineExceeded => "deadline-exceeded",
            Reason::UpstreamUnreachable => "upstream-unreachable",
            Reason::UpstreamReset => "upstream-reset",
            Reason::NoLocalInstance => "no-local-instance",
            Reason::BadRequest => "bad-request",
            Reason::Forbidden => "forbidden",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Reason::NoEndpoints | Reason::NoLocalInstance => StatusCode::SERVICE_UNAVAILABLE,
            Reason::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Reason::UpstreamUnreachable | Reason::UpstreamReset => StatusCode::BAD_GATEWAY,
            Reason::BadRequest => StatusCode::BAD_REQUEST,
            Reason::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// The gRPC status code (UNAVAILABLE tells gRPC clients they may retry elsewhere).
    fn grpc_status(self) -> u16 {
        match self {
            Reason::DeadlineExceeded => 4,
            Reason::BadRequest => 3,
            // PERMISSION_DENIED: retrying elsewhere will not help.
            Reason::Forbidden => 7,
            _ => 14,
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        [
            Reason::NoEndpoints,
            Reason::DeadlineExceeded,
            Reason::UpstreamUnreachable,
            Reason::UpstreamReset,
            Reason::NoLocalInstance,
            Reason::BadRequest,
            Reason::Forbidden,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// The agent's own answer for `reason`.
pub fn response(reason: Reason, grpc: bool) -> Response<ProxyBody> {
    let mut resp = if grpc {
        let mut r = Response::new(empty());
        let h = r.headers_mut();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert("grpc-status", HeaderValue::from(reason.grpc_status()));
        h.insert("grpc-message", HeaderValue::from_static(reason.as_str()));
        r
    } else {
        let mut r = Response::new(
            Full::new(Bytes::from(body_text(reason)))
                .map_err(|never| match never {})
                .boxed(),
        );
        *r.status_mut() = reason.status();
        r.headers_mut()
            .insert("content-type", HeaderValue::from_static(TEXT));
        r
    };
    resp.headers_mut()
        .insert(wire::ERROR, HeaderValue::from_static(reason.as_str()));
    resp
}

/// [`response`] (non-gRPC) as HTTP/1.1 bytes, for the lean HTTP/1 path, which writes its own
/// heads (hyper's server adds the `date` to the others'); `close` adds `connection: close`.
pub fn write_http1(reason: Reason, close: bool, out: &mut Vec<u8>) {
    let body = body_text(reason);
    let status = reason.status();
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: {TEXT}\r\n{}: {}\r\ncontent-length: {}\r\n{}",
        status.as_str(),
        status.canonical_reason().unwrap_or_default(),
        wire::ERROR,
        reason.as_str(),
        body.len(),
        if close { "connection: close\r\n" } else { "" },
    );
    out.extend_from_slice(head.as_bytes());
    crate::date::write_line(out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

/// The content type of the agent's own (non-gRPC) answer.
const TEXT: &str = "text/plain";

/// The `x-hostmesh-error` reason of a response an agent made (this one or a peer), if it is one.
pub fn reason_of<B>(resp: &http::Response<B>) -> Option<&str> {
    resp.headers()
        .get(wire::names::ERROR)
        .and_then(|v| v.to_str().ok())
}

/// The length of the body of the agent's own (non-gRPC) answer for `reason`.
pub(crate) fn body_len(reason: Reason) -> usize {
    body_text(reason).len()
}

/// The body of the agent's own (non-gRPC) answer.
fn body_text(reason: Reason) -> String {
    format!("hostmesh: {}\n", reason.as_str())
}

fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http1_answer_says_what_the_response_says() {
        let r = response(Reason::NoEndpoints, false);
        let mut out = Vec::new();
        write_http1(Reason::NoEndpoints, true, &mut out);
        let text = String::from_utf8(out).expect("ascii");
        // The date line (the clock's, `date`'s own test checks it) comes last in the head.
        let (text, date) = match text.split_once("\r\ndate: ") {
            Some((before, after)) => {
                let (date, rest) = after.split_once("\r\n").expect("the date line's end");
                (format!("{before}\r\n{rest}"), date.to_owned())
            }
            None => panic!("no date line in {text:?}"),
        };
        assert!(date.ends_with(" GMT"), "{date}");
        assert_eq!(
            text,
            format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: {}\r\nx-hostmesh-error: {}\r\n\
                 content-length: 23\r\nconnection: close\r\n\r\nhostmesh: no-endpoints\n",
                r.headers()["content-type"].to_str().expect("ascii"),
                r.headers()[wire::ERROR].to_str().expect("ascii"),
            )
        );
    }

    #[test]
    fn forbidden_is_403_and_grpc_permission_denied() {
        let r = response(Reason::Forbidden, false);
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()[wire::ERROR], "forbidden");
        let r = response(Reason::Forbidden, true);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["grpc-status"], "7");
        assert_eq!(r.headers()[wire::ERROR], "forbidden");
        assert_eq!(Reason::parse("forbidden"), Some(Reason::Forbidden));
    }
}
