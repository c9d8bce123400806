#!/usr/bin/env python3
"""Prints bench/proxy/run's tables and ratios from its results directory.

results.tsv lines:  run  KEY  CONNS  OUTPUT_FILE  CPU_TICKS  ROUND   (wrk, or h2load for gRPC)
                    rss  KEY  KIB
                    agent_rss  NAME  WHEN  KIB                   (each agent, idle and after)
                    skip KEY  REASON
Every figure in the tables is the median over the rounds; a ratio is the ratio of the medians,
followed by its lowest and highest value in any one round. Nothing passes or fails here: the
goals are printed next to the numbers.
"""

import os
import re
import statistics
import sys

CLK_TCK = os.sysconf("SC_CLK_TCK")

LABELS = {
    "direct": "nginx direct (no proxy)",
    "haproxy": "HAProxy http",
    "nginx-rp": "nginx reverse proxy",
    "hostmesh": "hostmesh http",
    "haproxy-chain": "HAProxy -> h2c -> HAProxy",
    "hostmesh-2": "hostmesh A -> h2c -> B",
    "haproxy-tcp": "HAProxy tcp",
    "hostmesh-tcp": "hostmesh tcp",
    "haproxy-tcp-chain": "HAProxy tcp -> HAProxy tcp",
    "hostmesh-tcp-2": "hostmesh tcp A -> B",
    "haproxy-mtls-chain": "HAProxy -> mTLS h2 -> HAProxy",
    "hostmesh-mtls-2": "hostmesh A -> mTLS h2 -> B",
    "haproxy-tcp-mtls-chain": "HAProxy tcp -> mTLS -> HAProxy",
    "hostmesh-tcp-mtls-2": "hostmesh tcp A -> mTLS -> B",
    "haproxy-grpc-chain": "HAProxy -> h2c -> HAProxy",
    "hostmesh-grpc-2": "hostmesh A -> h2c -> B",
    "haproxy-grpc-mtls-chain": "HAProxy -> mTLS h2 -> HAProxy",
    "hostmesh-grpc-mtls-2": "hostmesh A -> mTLS h2 -> B",
}

GROUPS = [
    ("One hop: wrk -> proxy -> nginx, same host", ["direct", "haproxy", "nginx-rp", "hostmesh"]),
    (
        "Two hosts: wrk in A -> proxy A -> proxy B -> nginx in B",
        ["haproxy-chain", "hostmesh-2", "haproxy-mtls-chain", "hostmesh-mtls-2"],
    ),
    (
        "gRPC, two hosts: h2load (h2c) in A -> proxy A -> proxy B -> nginx h2c in B",
        ["haproxy-grpc-chain", "hostmesh-grpc-2", "haproxy-grpc-mtls-chain", "hostmesh-grpc-mtls-2"],
    ),
    (
        "TCP (wrk HTTP over a TCP proxy)",
        [
            "haproxy-tcp",
            "hostmesh-tcp",
            "haproxy-tcp-chain",
            "hostmesh-tcp-2",
            "haproxy-tcp-mtls-chain",
            "hostmesh-tcp-mtls-2",
        ],
    ),
]

UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(path):
    try:
        text = open(path).read()
    except OSError:
        return None
    r = {"rps": None, "p50": None, "p99": None, "requests": 0, "errors": 0, "text": text}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", text)
    if m:
        r["requests"] = int(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        if m:
            r[key] = float(m.group(1)) * UNIT_US[m.group(2)]
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        r["errors"] += int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        r["errors"] += sum(int(x) for x in m.groups())
    return r


def parse_h2load(path):
    """h2load's summary, and p50/p99 from its per-request log (start, status, duration in us)."""
    try:
        text = open(path).read()
    except OSError:
        return None
    r = {"rps": None, "p50": None, "p99": None, "requests": 0, "errors": 0, "text": text}
    m = re.search(r"^finished in [\d.]+\w+, ([\d.]+) req/s", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if m:
        done, ok, failed, errored, timeout = (int(x) for x in m.groups())
        r["requests"] = done
        r["errors"] = failed + errored + timeout + (done - ok)
    try:
        durations = sorted(int(line.split("\t")[2]) for line in open(path + ".log") if line.count("\t") >= 2)
    except (OSError, ValueError, IndexError):
        durations = []
    if durations:
        r["p50"] = float(durations[len(durations) // 2])
        r["p99"] = float(durations[min(len(durations) - 1, len(durations) * 99 // 100)])
    return r


def fmt_us(v):
    if v is None:
        return "-"
    return f"{v:.0f}us" if v < 10000 else f"{v / 1000:.1f}ms"


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def fmt_x(v):
    return "-" if v is None else f"{v:.2f}x"


def main():
    d = sys.argv[1]
    rounds, rss, skips, order_conns, agent_rss = {}, {}, {}, [], {}
    for line in open(os.path.join(d, "results.tsv")):
        f = line.rstrip("\n").split("\t")
        if f[0] == "run":
            key, conns, path, ticks, rnd = f[1], int(f[2]), f[3], int(f[4]), int(f[5])
            parse = parse_h2load if "grpc" in key else parse_wrk
            r = parse(path) or {"rps": None, "p50": None, "p99": None, "requests": 0, "errors": 0}
            r["cpu100k"] = (ticks / CLK_TCK) / r["requests"] * 1e5 if r["requests"] else None
            rounds.setdefault((key, conns), {})[rnd] = r
            if conns not in order_conns:
                order_conns.append(conns)
        elif f[0] == "rss":
            rss[f[1]] = int(f[2])
        elif f[0] == "agent_rss":
            agent_rss.setdefault(f[1], {})[f[2]] = int(f[3])
        elif f[0] == "skip":
            skips[f[1]] = f[2]

    def median(rs, field):
        vals = [r[field] for r in rs if r.get(field) is not None]
        return statistics.median(vals) if vals else None

    runs = {}
    for k, by_round in rounds.items():
        rs = list(by_round.values())
        runs[k] = {f: median(rs, f) for f in ("rps", "p50", "p99", "cpu100k")}
        runs[k]["errors"] = sum(r["errors"] for r in rs)
        runs[k]["text"] = "\n".join(r.get("text", "") for r in rs if r["errors"] or not r["rps"])

    def get(key, conns, field):
        r = runs.get((key, conns))
        return r.get(field) if r else None

    for title, keys in GROUPS:
        print(f"\n== {title}")
        hdr = f"{'':28}"
        for c in order_conns:
            hdr += f" | {'c=' + str(c):^44}"
        print(hdr)
        sub = f"{'':28}"
        for _ in order_conns:
            sub += f" | {'req/s':>9} {'p50':>7} {'p99':>8} {'err':>5} {'cpu/100k':>9}"
        print(sub + f" | {'RSS':>7}")
        for key in keys:
            line = f"{LABELS[key]:28}"
            if key not in skips and not any((key, c) in runs for c in order_conns):
                continue
            if key in skips:
                print(f"{line} | skipped: {skips[key]}")
                continue
            for c in order_conns:
                r = runs.get((key, c))
                if not r:
                    line += f" | {'(not run)':^44}"
                    continue
                cpu = "-" if r["cpu100k"] is None or key == "direct" else f"{r['cpu100k']:.2f}s"
                line += (
                    f" | {fmt(r['rps'], '9.0f')} {fmt_us(r['p50']):>7} {fmt_us(r['p99']):>8}"
                    f" {r['errors']:>5} {cpu:>9}"
                )
            mib = f"{rss[key] / 1024:.1f}M" if key in rss else "-"
            print(line + f" | {mib:>7}")

    print("\n== Ratios and goals (a report: nothing passes or fails)")
    hi, lo = max(order_conns), min(order_conns)

    def ratio(a, b, c):
        x, y = get(a, c, "rps"), get(b, c, "rps")
        return x / y if x and y else None

    def spread(a, b, c):
        ra, rb = rounds.get((a, c), {}), rounds.get((b, c), {})
        each = [
            ra[n]["rps"] / rb[n]["rps"]
            for n in ra
            if n in rb and ra[n]["rps"] and rb[n]["rps"]
        ]
        return f" ({min(each):.2f}-{max(each):.2f})" if len(each) > 1 else ""

    def fmt_ratio(a, b, c):
        return fmt_x(ratio(a, b, c)) + spread(a, b, c)

    def line(text, value, goal):
        print(f"  {text:52} {value:>22}   goal: {goal}")

    def versus(text, a, b, c, field, goal):
        """A field of two keys side by side: latencies in us, CPU in seconds."""
        x, y = get(a, c, field), get(b, c, field)
        shown = f"{fmt_us(x)} vs {fmt_us(y)}" if field in ("p50", "p99") else f"{fmt(x, '.2f')} vs {fmt(y, '.2f')}"
        line(text, shown, goal)

    def p50_gap(text, a, b, c, goal):
        x, y = get(a, c, "p50"), get(b, c, "p50")
        line(text, f"{x - y:+.0f}us" if x is not None and y is not None else "-", goal)

    line(f"one hop req/s hostmesh/HAProxy, c={hi}", fmt_ratio("hostmesh", "haproxy", hi), ">= 1.20x")
    line(f"one hop req/s hostmesh/HAProxy, c={lo}", fmt_ratio("hostmesh", "haproxy", lo), "(none)")
    versus(f"one hop p99 c={hi}: hostmesh vs HAProxy", "hostmesh", "haproxy", hi, "p99", "hostmesh <= HAProxy")
    p50_gap(f"one hop p50 c={lo}: hostmesh - HAProxy", "hostmesh", "haproxy", lo, "<= +15us")
    line(f"one hop req/s hostmesh/nginx proxy, c={hi}", fmt_ratio("hostmesh", "nginx-rp", hi), "(none)")
    for c in (hi, lo):
        line(f"two hosts req/s hostmesh/HAProxy chain, c={c}", fmt_ratio("hostmesh-2", "haproxy-chain", c), "(none)")
    p50_gap(f"two hosts p50 c={lo}: hostmesh - HAProxy chain", "hostmesh-2", "haproxy-chain", lo, "(none)")
    for c in (hi, lo):
        line(
            f"two hosts mTLS req/s hostmesh/HAProxy chain, c={c}",
            fmt_ratio("hostmesh-mtls-2", "haproxy-mtls-chain", c),
            ">= 1.00x",
        )
    mtls = ("hostmesh-mtls-2", "haproxy-mtls-chain")
    versus(f"two hosts mTLS p99 c={hi}: hostmesh vs HAProxy", *mtls, hi, "p99", "hostmesh <= HAProxy")
    p50_gap(f"two hosts mTLS p50 c={lo}: hostmesh - HAProxy", *mtls, lo, "<= +15us")
    for c in (hi, lo):
        versus(f"CPU s/100k two hosts mTLS c={c}: hostmesh vs HAProxy", *mtls, c, "cpu100k", "hostmesh <= HAProxy")
    line(f"two hosts h2c req/s hostmesh/HAProxy chain, c={hi}", fmt_ratio("hostmesh-2", "haproxy-chain", hi), ">= 1.00x")
    for c in (hi, lo):
        line(f"gRPC two hosts h2c req/s hostmesh/HAProxy, c={c}", fmt_ratio("hostmesh-grpc-2", "haproxy-grpc-chain", c), ">= 1.00x" if c == hi else "(none)")
    for c in (hi, lo):
        line(
            f"gRPC two hosts mTLS req/s hostmesh/HAProxy, c={c}",
            fmt_ratio("hostmesh-grpc-mtls-2", "haproxy-grpc-mtls-chain", c),
            ">= 1.00x" if c == hi else "(none)",
        )
    for c in (hi, lo):
        line(f"TCP one hop req/s hostmesh/HAProxy tcp, c={c}", fmt_ratio("hostmesh-tcp", "haproxy-tcp", c), ">= 1.00x")
    for c in (hi, lo):
        line(
            f"TCP two hosts req/s hostmesh/HAProxy tcp chain, c={c}",
            fmt_ratio("hostmesh-tcp-2", "haproxy-tcp-chain", c),
            ">= 1.00x",
        )
    for c in (hi, lo):
        line(
            f"TCP two hosts mTLS req/s hostmesh/HAProxy, c={c}",
            fmt_ratio("hostmesh-tcp-mtls-2", "haproxy-tcp-mtls-chain", c),
            ">= 1.00x",
        )
    versus(f"CPU s/100k req one hop c={hi}: hostmesh vs HAProxy", "hostmesh", "haproxy", hi, "cpu100k", "(report)")

    for name in sorted(agent_rss):
        each = agent_rss[name]
        idle, after = each.get("idle"), each.get("after")
        line(
            f"agent {name} RSS idle / after the runs",
            f"{fmt(idle and idle / 1024, '.1f')}M / {fmt(after and after / 1024, '.1f')}M",
            "<= 15M / <= 25M",
        )

    bad = [(k, c) for (k, c), r in runs.items() if r["errors"] or not r["rps"]]
    if bad:
        print("\n== Runs with errors (wrk output)")
        for k, c in bad:
            print(f"--- {LABELS[k]} c={c}")
            print(runs[(k, c)].get("text", "(no output)").rstrip())


if __name__ == "__main__":
    main()
