# A tiny HTTP/1.1 app standing in for a legacy service, controlled through files in its directory:
#   healthy      exists -> GET /healthz answers 200, else 500
#   status       (optional) the status of every other request, default 200
#   delay_ms     (optional) milliseconds to wait before answering other requests
#   hangup       exists -> read the request (and its body), record it, then close without answering
# Every request except /healthz is appended to requests.jsonl (method, path, headers, the header
# fields as they came ("raw": [name, value] pairs, names as written, in order), body length, and
# the body itself when it is JSON: how a test reads what an OTLP/HTTP exporter sent).
# POST /echo answers with the request body; GET /bytes?n=N answers N bytes of a fixed pattern.
# GET /chunked?n=N&size=S answers the same N bytes chunked: S-byte chunks, each with the chunk
# extension ";seq=I", then a trailer "x-done: I"; with &hold=1 it sends the first chunk, then
# waits (30 s at most) for a file `release` before the rest (and removes it).
# GET /empty?status=C answers C with no body (no content-length for 204 and 304, else 0).
# GET /hop answers with hop-by-hop response fields (Connection naming X-App-Private, Keep-Alive,
# Proxy-Connection) beside an end-to-end X-App-Public.
# GET /closing answers, with `Connection: close`, and closes; GET /untilclose?n=N answers N bytes
# framed by the close alone (no length, not chunked).
# GET /statusline?s=S answers "ok\n" under the status line S (percent-encoded, as it is sent:
# e.g. no reason phrase at all) with a content-length.
# GET /hold?ms=N waits up to N ms for its client to close the connection before answering like
# any other request; a close seen first appends the path to gone.jsonl and nothing is answered
# (how a test sees that an agent dropped a request the caller gave up on).
# &cl=N on /chunked adds a (wrong) `content-length: N` beside `transfer-encoding: chunked`.
# Request bodies may be sent with content-length or chunked. PROPFIND is answered like GET.
# `ready` is created once the socket is listening.
import http.server
import json
import os
import select
import socket
import sys
import threading
import time
import urllib.parse

d, bind, port, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
with open(os.path.join(d, "body"), "rb") as f:
    BODY = f.read()
LOCK = threading.Lock()


def read_file(fname, default):
    try:
        with open(os.path.join(d, fname)) as f:
            return f.read().strip() or default
    except OSError:
        return default


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hostmesh-test-backend"
    # Head and body in one write, sent at once: a small second write held back by Nagle until
    # the peer's delayed ACK (40 ms) would look like a slow app to a latency-aware balancer.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        sys.stderr.write("%s %s\n" % (self.address_string(), fmt % args))

    def read_body(self):
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("content-length") or 0)
        return self.rfile.read(n) if n else b""

    def query(self, key, default):
        for part in self.path.partition("?")[2].split("&"):
            k, _, v = part.partition("=")
            if k == key:
                return v
        return default

    def pattern(self, n):
        return (b"0123456789abcdef" * (n // 16 + 1))[:n]

    def send_chunked(self):
        data = self.pattern(int(self.query("n", "0")))
        size = int(self.query("size", "1000"))
        self.send_response(200)
        self.send_header("content-type", "application/octet-stream")
        self.send_header("transfer-encoding", "chunked")
        if self.query("cl", None) is not None:
            self.send_header("content-length", self.query("cl", None))
        self.send_header("x-backend", name)
        self.end_headers()
        seq = 0
        for at in range(0, len(data), size):
            piece = data[at:at + size]
            self.wfile.write(b"%x;seq=%d\r\n%s\r\n" % (len(piece), seq, piece))
            seq += 1
            if seq == 1 and self.query("hold", "0") == "1":
                self.wfile.flush()
                release = os.path.join(d, "release")
                deadline = time.time() + 30
                while not os.path.exists(release) and time.time() < deadline:
                    time.sleep(0.01)
                try:
                    os.remove(release)
                except OSError:
                    pass
        self.wfile.write(b"0\r\nx-done: %d\r\n\r\n" % seq)

    def client_left(self, ms):
        """Whether the client closed the connection within `ms` ms (it sends nothing more on a
        connection waiting for its answer, so readable means closed)."""
        deadline = time.time() + ms / 1000.0
        while time.time() < deadline:
            readable, _, _ = select.select([self.connection], [], [], 0.02)
            if readable:
                try:
                    return self.connection.recv(1, socket.MSG_PEEK) == b""
                except OSError:
                    return True
        return False

    def send_special(self, path):
        """The answers of /chunked, /empty, /hop, /closing and /untilclose, and the silence of a
        /hold whose client left; False for others."""
        if path == "/hold" and self.client_left(int(self.query("ms", "0"))):
            with LOCK, open(os.path.join(d, "gone.jsonl"), "a") as f:
                f.write(json.dumps({"path": self.path}) + "\n")
            self.close_connection = True
            return True
        if path == "/chunked":
            self.send_chunked()
        elif path == "/empty":
            status = int(self.query("status", "204"))
            self.send_response(status)
            self.send_header("x-backend", name)
            if status not in (204, 304):
                self.send_header("content-length", "0")
            self.end_headers()
        elif path == "/hop":
            self.send_response(200)
            self.send_header("Connection", "keep-alive, X-App-Private")
            self.send_header("X-App-Private", "secret")
            self.send_header("Keep-Alive", "timeout=30")
            self.send_header("Proxy-Connection", "keep-alive")
            self.send_header("X-App-Public", "1")
            self.send_header("content-length", "3")
            self.end_headers()
            self.wfile.write(b"ok\n")
        elif path == "/closing":
            self.send_response(200)
            self.send_header("Connection", "close")
            self.send_header("content-length", "8")
            self.end_headers()
            self.wfile.write(b"closing\n")
        elif path == "/statusline":
            line = urllib.parse.unquote_to_bytes(self.query("s", ""))
            self.wfile.write(line + b"\r\nServer: %s\r\ncontent-length: 3\r\n\r\nok\n"
                             % self.server_version.encode())
        elif path == "/untilclose":
            self.send_response(200)
            self.send_header("x-backend", name)
            self.end_headers()
            self.wfile.write(self.pattern(int(self.query("n", "0"))))
            self.close_connection = True
        else:
            return False
        return True

    def handle_any(self):
        body = self.read_body()
        path = self.path.split("?")[0]
        if path == "/echo" or path == "/bytes":
            if path == "/echo":
                payload = body
            else:
                n = int(self.path.split("n=")[1]) if "n=" in self.path else 0
                payload = (b"0123456789abcdef" * (n // 16 + 1))[:n]
            self.send_response(200)
            self.send_header("content-type", "application/octet-stream")
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-backend", name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        if path == "/healthz":
            ok = os.path.exists(os.path.join(d, "healthy"))
            status, payload = (200, b"ok\n") if ok else (500, b"unhealthy\n")
        else:
            headers = {}
            for k, v in self.headers.items():
                k = k.lower()
                headers[k] = headers[k] + ", " + v if k in headers else v
            rec = {"method": self.command, "path": self.path, "headers": headers,
                   "raw": [[k, v] for k, v in self.headers.items()], "body_len": len(body)}
            if headers.get("content-type", "").startswith("application/json"):
                rec["json"] = json.loads(body or b"null")
            with LOCK, open(os.path.join(d, "requests.jsonl"), "a") as f:
                f.write(json.dumps(rec) + "\n")
            if os.path.exists(os.path.join(d, "hangup")):
                self.close_connection = True
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if self.send_special(path):
                return
            delay = int(read_file("delay_ms", "0"))
            if delay:
                time.sleep(delay / 1000.0)
            status, payload = int(read_file("status", "200")), BODY
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-backend", name)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_OPTIONS = do_PATCH = handle_any
    # An extension method (WebDAV), answered like any other.
    do_PROPFIND = handle_any


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default listen backlog is 5: a burst of new connections (load moving here
    # when another instance drains) would overflow it, and a dropped SYN costs a whole
    # connect_timeout. Real apps listen with a larger backlog.
    request_queue_size = 128


srv = Server((bind, port), Handler)
open(os.path.join(d, "ready"), "w").close()
srv.serve_forever()
