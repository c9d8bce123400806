#!/usr/bin/python3
"""A steady load from an app that knows nothing of hostmesh: every request resolves the name
through the machine's own resolver and opens a new connection, as a legacy client does.

    lab-load URL OUT STOP [THREADS]

Runs until the file STOP exists, then writes OUT (JSON): requests, failures, the first
failures' reasons, and which instance answered how often (nginx answers "web on HOST").
A request fails on anything but a whole 200 answer. Writes OUT.started after the first answer.
"""

import http.client
import json
import os
import sys
import threading
import time
import urllib.parse

url, out, stop = sys.argv[1:4]
threads = int(sys.argv[4]) if len(sys.argv) > 4 else 2
parts = urllib.parse.urlsplit(url)
lock = threading.Lock()
totals = {"requests": 0, "failed": 0, "reasons": [], "served_by": {}}
started = threading.Event()


def stopped():
    try:
        open(stop).close()
        return True
    except OSError:
        return False


def one():
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=10)
    try:
        conn.request("GET", parts.path or "/")
        response = conn.getresponse()
        body = response.read().decode(errors="replace")
        if response.status != 200:
            return None, f"{response.status} {response.getheader('x-hostmesh-error')}: {body[:80]}"
        return body.strip(), None
    except Exception as e:  # every way a request can fail is a failure to report
        return None, f"{type(e).__name__}: {e}"
    finally:
        conn.close()


def worker():
    while not stopped():
        answer, reason = one()
        with lock:
            totals["requests"] += 1
            if reason:
                totals["failed"] += 1
                if len(totals["reasons"]) < 20:
                    totals["reasons"].append(f"{time.strftime('%H:%M:%S')} {reason}")
            else:
                totals["served_by"][answer] = totals["served_by"].get(answer, 0) + 1
                if not started.is_set():
                    started.set()
                    open(out + ".started", "w").close()
        time.sleep(0.005)


pool = [threading.Thread(target=worker) for _ in range(threads)]
for t in pool:
    t.start()
for t in pool:
    t.join()
with open(out + ".tmp", "w") as f:
    json.dump(totals, f)
os.rename(out + ".tmp", out)
