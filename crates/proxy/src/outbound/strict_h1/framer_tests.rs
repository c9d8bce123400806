use super::*;

/// What the framer let through, in order: heads whole, body bytes merged per body.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Head(String),
    Body(String),
}

/// Feeds `input` in pieces of `step` bytes the way the guard does (bytes held until released,
/// more appended after `More`); returns what was released and the verdict that stopped it.
fn frame_with(input: &[u8], step: usize, max: usize) -> (Vec<Piece>, Option<Feed>) {
    let mut f = Framer::new(max);
    let mut held: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut wants_more = false;
    let mut out = Vec::new();
    loop {
        if held.is_empty() || wants_more {
            if pos == input.len() {
                return (out, None);
            }
            let end = (pos + step).min(input.len());
            held.extend_from_slice(&input[pos..end]);
            pos = end;
            wants_more = false;
            continue;
        }
        let body = f.in_body();
        match f.feed(&held) {
            Feed::Release(n) => {
                assert!(n > 0, "a release is never empty");
                let text = String::from_utf8_lossy(&held[..n]).into_owned();
                held.drain(..n);
                match (body, out.last_mut()) {
                    (true, Some(Piece::Body(b))) => b.push_str(&text),
                    (true, _) => out.push(Piece::Body(text)),
                    (false, _) => out.push(Piece::Head(text)),
                }
            }
            Feed::More => wants_more = true,
            verdict => return (out, Some(verdict)),
        }
    }
}

/// Frames `input` whole, byte by byte and in 7-byte pieces, checks that all agree, and returns
/// the result.
fn frame(input: &str) -> (Vec<Piece>, Option<Feed>) {
    let whole = frame_with(input.as_bytes(), input.len().max(1), 1024);
    for step in [1, 7] {
        assert_eq!(
            frame_with(input.as_bytes(), step, 1024),
            whole,
            "{input:?} in steps of {step}"
        );
    }
    whole
}

fn head(s: &str) -> Piece {
    Piece::Head(s.to_owned())
}

fn body(s: &str) -> Piece {
    Piece::Body(s.to_owned())
}

/// The verdict on a single head (and what follows it).
fn verdict(input: &str) -> Option<Feed> {
    frame(input).1
}

const GET: &str = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";

#[test]
fn a_head_is_released_whole_however_it_arrives() {
    assert_eq!(frame(GET), (vec![head(GET)], None));
    // Incomplete: nothing is released.
    assert_eq!(frame("GET / HTTP/1.1\r\nHost: a\r\n"), (vec![], None));
    // Empty lines before the request line belong to the head (httparse skips them too).
    let leading = "\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    assert_eq!(frame(leading), (vec![head(leading)], None));
}

#[test]
fn pipelined_requests_are_split_at_their_boundaries() {
    let post = "POST /p HTTP/1.1\r\ncontent-length: 5\r\n\r\n";
    let zero = "PUT /z HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
    let input = format!("{GET}{post}hello{zero}{GET}");
    assert_eq!(
        frame(&input),
        (
            vec![head(GET), head(post), body("hello"), head(zero), head(GET)],
            None
        )
    );
}

#[test]
fn chunked_bodies_end_where_hyper_ends_them() {
    let post = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let chunks = "5;name=value\r\nhello\r\n6 ; x ;y=\"z\"\r\n world\r\nA\r\n0123456789\r\n\
                  0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n";
    let input = format!("{post}{chunks}{GET}");
    assert_eq!(
        frame(&input),
        (vec![head(post), body(chunks), head(GET)], None)
    );
    // No trailers; upper-case hex; leading zeros; a coding list ending in chunked.
    let post = "POST / HTTP/1.1\r\ntransfer-encoding: gzip, CHUNKED\r\n\r\n";
    let chunks = "00F\r\n0123456789abcde\r\n0\r\n\r\n";
    let input = format!("{post}{chunks}{GET}");
    assert_eq!(
        frame(&input),
        (vec![head(post), body(chunks), head(GET)], None)
    );
}

#[test]
fn request_smuggling_heads_are_refused() {
    let cases = [
        (
            "CL+TE",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        (
            "TE+CL",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        ),
        (
            "differing CL",
            "POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\n",
        ),
        ("CL list", "POST / HTTP/1.1\r\nContent-Length: 4, 4\r\n\r\n"),
        ("signed CL", "POST / HTTP/1.1\r\nContent-Length: +4\r\n\r\n"),
        ("empty CL", "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n"),
        (
            "CL overflow",
            "POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
        ),
        (
            "TE gzip",
            "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
        (
            "TE chunked, gzip",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        ),
        (
            "last TE line not chunked",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n",
        ),
        (
            "bare LF in the request line",
            "GET / HTTP/1.1\nHost: a\r\n\r\n",
        ),
        (
            "bare LF in a header line",
            "GET / HTTP/1.1\r\nHost: a\n\r\n",
        ),
        ("bare LF ending the head", "GET / HTTP/1.1\r\nHost: a\r\n\n"),
        (
            "bare LF before the request line",
            "\nGET / HTTP/1.1\r\n\r\n",
        ),
    ];
    for (what, input) in cases {
        assert_eq!(frame(input), (vec![], Some(Feed::Malformed)), "{what}");
    }
    // Equal duplicates are one length, as for hyper.
    let dup = "POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length:  2 \r\n\r\n";
    assert_eq!(
        frame(&format!("{dup}ok")),
        (vec![head(dup), body("ok")], None)
    );
}

#[test]
fn a_bad_head_after_a_good_one_releases_the_good_one_first() {
    let bad = "POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(
        frame(&format!("{GET}{bad}0\r\n\r\n")),
        (vec![head(GET)], Some(Feed::Malformed))
    );
}

#[test]
fn what_hyper_judges_passes_the_framer() {
    // obs-fold, NUL, a line without a colon: httparse refuses them, so hyper answers 400.
    for input in [
        "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
        "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n",
        "GET / HTTP/1.1\r\nno colon\r\n\r\n",
    ] {
        assert_eq!(frame(input), (vec![head(input)], None), "{input:?}");
    }
}

#[test]
fn heads_over_the_limit_go_to_hyper_as_they_are() {
    let line = |n: usize| format!("X: {}\r\n", "a".repeat(n));
    let exact = format!("GET / HTTP/1.1\r\n{}\r\n", line(100));
    assert_eq!(frame_with(exact.as_bytes(), 3, exact.len()).1, None);
    // Complete but one byte too long.
    assert_eq!(
        frame_with(exact.as_bytes(), 3, exact.len() - 1).1,
        Some(Feed::TooLarge)
    );
    // Never complete: decided once the bytes pass the limit.
    let endless = format!("GET / HTTP/1.1\r\n{}", "a".repeat(2000));
    assert_eq!(
        frame_with(endless.as_bytes(), 5, 1024),
        (vec![], Some(Feed::TooLarge))
    );
}

#[test]
fn broken_chunked_framing_ends_the_body() {
    let post = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for chunks in [
        "zz\r\n",
        "5\r\nhelloXX",
        "5\r\nhello\n",
        "5\nhello\r\n",
        "5;ext\nhello\r\n",
        "5 5\r\n",
        "10000000000000000\r\n",
        "0\r\nX: 1\n\r\n",
        "0\r\n\n",
        "0\r\n\rX",
    ] {
        // Body bytes before the bad byte may have gone out, depending on how they arrived.
        let input = format!("{post}{chunks}");
        for step in [input.len(), 1, 7] {
            let (pieces, verdict) = frame_with(input.as_bytes(), step, 1024);
            assert_eq!(pieces.first(), Some(&head(post)), "{chunks:?}");
            assert_eq!(
                verdict,
                Some(Feed::BadChunk),
                "{chunks:?} in steps of {step}"
            );
        }
    }
}

#[test]
fn a_long_body_is_released_by_count() {
    let post = "POST / HTTP/1.1\r\nContent-Length: 100000\r\n\r\n";
    let mut f = Framer::new(1024);
    assert_eq!(f.feed(post.as_bytes()), Feed::Release(post.len()));
    let data = vec![b'\n'; 60_000];
    assert_eq!(f.feed(&data), Feed::Release(60_000));
    assert_eq!(f.feed(&data), Feed::Release(40_000));
    assert!(!f.in_body());
    assert_eq!(verdict(GET), None);
}
