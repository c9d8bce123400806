#!/usr/bin/env python3
# A stand-in for `hostmesh agent`, just enough to exercise the test harness's Agent wrapper without
# depending on the real agent's behaviour: it reads the config like the agent would, serves the
# admin endpoint (/ready, /live, /status, /metrics), logs SIGHUP, and exits 0 on SIGTERM.
import http.server
import json
import os
import signal
import sys
import threading
import tomllib

if sys.argv[1:2] == ["--version"]:
    print("hostmesh stand-in 0.0.0")
    sys.exit(0)
assert sys.argv[1:3] == ["agent", "--config"], sys.argv
with open(sys.argv[3], "rb") as f:
    config = tomllib.load(f)
host, port = config["admin"]["listen"].rsplit(":", 1)
reloads = 0


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, fmt, *args):
        pass

    def do_GET(self):
        if self.path in ("/ready", "/live"):
            status, body = 200, b"ok\n"
        elif self.path == "/status":
            status = 200
            body = json.dumps(
                {"host": config["agent"]["host"], "pid": os.getpid(), "reloads": reloads,
                 "services": sorted(os.listdir(config["agent"]["services_dir"]))}
            ).encode()
        elif self.path == "/metrics":
            status, body = 200, b"hostmesh_registry_connected 1\n"
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def on_hup(*_):
    global reloads
    reloads += 1
    print("reloaded", flush=True)


def on_term(*_):
    print("terminating", flush=True)
    # shutdown() blocks until serve_forever returns, so it must not run on the serving thread.
    threading.Thread(target=srv.shutdown).start()


signal.signal(signal.SIGHUP, on_hup)
signal.signal(signal.SIGTERM, on_term)
srv = http.server.ThreadingHTTPServer((host, int(port)), Handler)
print("stand-in agent for %s serving on %s:%s" % (config["agent"]["host"], host, port), flush=True)
srv.serve_forever()
sys.exit(0)
