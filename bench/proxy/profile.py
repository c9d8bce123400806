#!/usr/bin/env python3
"""Summarises `perf script -F ip,sym` output of a `perf record --call-graph dwarf` of the agent:
the share of samples whose stack contains each category (categories overlap), and the split of
the client-facing connection's work. Used by bench/proxy/run with PROFILE=perf."""

import collections
import re
import sys

CATEGORIES = [
    ("kernel: send/writev (incl. loopback delivery to the peer)", r"^(__GI___writev|__send|__libc_send)$"),
    ("kernel: recv", r"^__libc_recv$"),
    ("threads: futex / park / unpark", r"futex|unpark|Unparker|::park"),
    ("epoll_wait", r"epoll_wait"),
    ("allocator (glibc malloc or mimalloc)", r"^(malloc|_int_malloc|_int_free|cfree.*|malloc_consolidate|realloc|_int_realloc|unlink_chunk.*)$|^_?mi_"),
    ("memmove / memcpy", r"^__mem(move|cpy)_"),
    ("http::header (HeaderMap ops, name parsing)", r"^http::header::|<http::header::"),
    ("timers (tokio time, Sleep, clock_gettime)", r"tokio::runtime::time|tokio::time::sleep|sleep_until|clock_gettime|Timespec>::now"),
    ("hyper-util legacy Client::send_request", r"legacy::client::Client<C,B>::send_request"),
    ("hyper-util pool", r"legacy::pool"),
    ("hyper client dispatch channel", r"hyper::client::dispatch"),
    ("h2 crate", r"^<?h2::"),
    ("rustls (record layer, state machine)", r"^<?rustls::"),
    ("crypto (ring / aws-lc: AES-GCM, ChaCha, ECDSA, X25519)", r"^<?ring::|^ring_core|aws_lc|^GFp_|_gcm_|aesni|chacha|poly1305|ecp_nistz256"),
    ("tokio spawn (new tasks)", r"spawn_inner|task::spawn::spawn|OwnedTasks.*bind"),
    ("hostmesh_proxy::outbound::http::build", r"^hostmesh_proxy::outbound::http::build$"),
    ("lean HTTP/1 path: head parsing (httparse, h1::request/response)", r"^httparse::|hostmesh_proxy::outbound::h1::(request|response)::"),
    ("retry budget (outbound::budget)", r"hostmesh_proxy::outbound::budget::"),
    ("hostmesh_wire::headers (strip hop-by-hop / internal)", r"^hostmesh_wire::headers::"),
    ("hostmesh_proxy::metrics", r"^hostmesh_proxy::metrics::"),
    ("core::fmt (format!)", r"core::fmt::|format_inner"),
]


def load(path):
    stacks, cur = [], []
    for line in open(path, errors="replace"):
        line = line.strip()
        if not line:
            if cur:
                stacks.append(cur[::-1])  # root first
                cur = []
            continue
        parts = line.split(None, 1)
        sym = parts[1] if len(parts) > 1 else "?"
        cur.append(re.sub(r"\+0x[0-9a-f]+$", "", sym))
    if cur:
        stacks.append(cur[::-1])
    return stacks


def main():
    stacks = load(sys.argv[1])
    n = len(stacks)
    if not n:
        print("no samples")
        return
    print(f"  {n} samples; share of samples whose stack contains (categories overlap):")
    for name, pat in CATEGORIES:
        rx = re.compile(pat)
        k = sum(1 for st in stacks if any(rx.search(s) for s in st))
        print(f"  {100 * k / n:5.1f}%  {name}")
    # Which task the sample belongs to.
    tasks = collections.Counter()
    for st in stacks:
        j = " | ".join(st)
        if "Outbound::accept" in j or "outbound::http::serve" in j:
            t = "client-facing connection task (hyper server, handler, response writes)"
        elif "UpgradeableConnection" in j or "client::conn::http1" in j or "h1::dispatch::Dispatcher" in j:
            t = "backend HTTP/1 connection task (hyper client)"
        elif "h2::client" in j or "proto::h2::client" in j:
            t = "HTTP/2 client connection task (to peers)"
        elif "proto::h2::server" in j or "h2::server" in j:
            t = "HTTP/2 server (inbound from peers)"
        elif "inbound" in j:
            t = "inbound (other)"
        elif "outbound::tcp" in j or "copy_bidirectional" in j:
            t = "TCP relay"
        elif "epoll_wait" in j or "park" in j:
            t = "idle/park/epoll"
        else:
            t = "other"
        tasks[t] += 1
    print("  by task:")
    for t, k in tasks.most_common():
        print(f"  {100 * k / n:5.1f}%  {t}")


if __name__ == "__main__":
    main()
