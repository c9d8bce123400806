# A user-space TCP fault proxy, run inside a host's network namespace by the test harness
# (tests/src/fault.rs). It relays LISTEN -> TARGET and is controlled while it runs through a Unix
# socket, one command per connection, one line each way; a command is in effect for every chunk read
# and every connection accepted after its reply:
#   ping                          -> ok
#   delay <to_target_us> <to_client_us>
#                                 -> ok   every chunk read from then on is forwarded that long after
#                                         it was read, in order (streaming, not per request)
#   mode pass|reset|reset_on_accept|refuse|stall
#                                 -> ok   how NEW connections are treated:
#        pass    relay to the target (a refused/failed upstream connect resets the client)
#        reset   accept, wait for the client's first bytes (at most RESET_WAIT), never forward them,
#                then close with SO_LINGER 0 (an RST): the client sees "connection reset"
#        reset_on_accept
#                accept and RST at once: depending on timing the client sees a failed connect or
#                a reset
#        refuse  stop listening (clients get "connection refused"); any other mode listens again
#        stall   accept, read and discard, never connect upstream, never answer
#   stats                         -> accepted <n> open <n>
#   reset_established             -> ok <n>   RSTs every relayed connection open now (both sides)
# Anything else answers "err ...". Usage: fault.py CONTROL_SOCKET LISTEN_HOST LISTEN_PORT
# TARGET_HOST TARGET_PORT. The control socket is served only once the relay listens, so a `ping`
# that answers means the proxy is ready.
import asyncio
import os
import socket
import struct
import sys

CHUNK = 64 * 1024
# Chunks queued per direction (read but not yet written): bounds memory, and with it the
# throughput under a delay to QUEUED * CHUNK per delay.
QUEUED = 64
# How long `reset` waits for a client's first bytes before resetting a silent connection anyway.
RESET_WAIT = 0.2
MODES = ("pass", "reset", "reset_on_accept", "refuse", "stall")

ctl_path, listen_host, listen_port, target_host, target_port = sys.argv[1:6]
listen_port, target_port = int(listen_port), int(target_port)

state = {
    "mode": "pass",
    "delay": {"to_target": 0.0, "to_client": 0.0},
    "accepted": 0,
}
relays = set()
stalled = set()
server = None


def rst(writer):
    """Closes the connection with an RST (SO_LINGER 0), dropping anything unsent."""
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    writer.transport.abort()


class Relay:
    def __init__(self, client_r, client_w):
        self.client_r, self.client_w = client_r, client_w
        self.target_w = None
        self.dead = False

    def kill(self):
        """Resets both sides (the fault is propagated, as an RST, to whoever is still there)."""
        if self.dead:
            return
        self.dead = True
        for w in (self.client_w, self.target_w):
            if w is not None:
                rst(w)

    async def run(self):
        try:
            target_r, self.target_w = await asyncio.open_connection(target_host, target_port)
        except OSError as e:
            print(f"upstream connect to {target_host}:{target_port} failed: {e}", flush=True)
            self.kill()
            return
        for w in (self.client_w, self.target_w):
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        up = asyncio.ensure_future(self.pump(self.client_r, self.target_w, "to_target"))
        down = asyncio.ensure_future(self.pump(target_r, self.client_w, "to_client"))
        await asyncio.gather(up, down)
        if not self.dead:
            self.dead = True
            for w in (self.client_w, self.target_w):
                w.close()

    async def pump(self, reader, writer, direction):
        """Copies reader -> writer, each chunk (and the EOF) delayed by the delay current when it
        was read. Order is kept because one task writes the chunks in the order they were read."""
        loop = asyncio.get_running_loop()
        queue = asyncio.Queue(QUEUED)

        async def read():
            while True:
                try:
                    data = await reader.read(CHUNK)
                except OSError as e:
                    await queue.put((0.0, e))
                    return
                await queue.put((loop.time() + state["delay"][direction], data))
                if not data:
                    return

        reading = asyncio.ensure_future(read())
        try:
            while not self.dead:
                due, item = await queue.get()
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.dead:
                    return
                if isinstance(item, Exception):
                    self.kill()
                    return
                if not item:
                    # Half-close: pass the EOF on and keep relaying the other direction.
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(item)
                await writer.drain()
        except OSError:
            self.kill()
        finally:
            reading.cancel()


async def on_client(reader, writer):
    state["accepted"] += 1
    mode = state["mode"]
    if mode in ("reset", "reset_on_accept"):
        if mode == "reset":
            # Wait for the client's first bytes, so that it is past connect() and sees the RST
            # as "connection reset" rather than as a failed connect.
            try:
                await asyncio.wait_for(reader.read(1), RESET_WAIT)
            except (asyncio.TimeoutError, OSError):
                pass
        rst(writer)
        return
    if mode == "stall":
        stalled.add(writer)
        try:
            while await reader.read(CHUNK):
                pass
        except OSError:
            pass
        finally:
            stalled.discard(writer)
            writer.transport.abort()
        return
    relay = Relay(reader, writer)
    relays.add(relay)
    try:
        await relay.run()
    except Exception as e:  # noqa: BLE001 - a broken connection must never stop the proxy
        print(f"relay failed: {e!r}", flush=True)
        relay.kill()
    finally:
        relays.discard(relay)


async def listen():
    global server
    if server is None:
        server = await asyncio.start_server(
            on_client, listen_host, listen_port, reuse_address=True, backlog=1024
        )


def unlisten():
    global server
    if server is not None:
        # Closes the listening socket at once (connections already accepted live on).
        server.close()
        server = None


async def command(line):
    words = line.split()
    if not words:
        return "err empty command"
    cmd, args = words[0], words[1:]
    if cmd == "ping":
        return "ok"
    if cmd == "delay" and len(args) == 2:
        state["delay"]["to_target"] = int(args[0]) / 1e6
        state["delay"]["to_client"] = int(args[1]) / 1e6
        return "ok"
    if cmd == "mode" and len(args) == 1 and args[0] in MODES:
        if args[0] == "refuse":
            unlisten()
        else:
            await listen()
        state["mode"] = args[0]
        return "ok"
    if cmd == "stats":
        return f"accepted {state['accepted']} open {len(relays) + len(stalled)}"
    if cmd == "reset_established":
        n = 0
        for relay in list(relays):
            if not relay.dead:
                relay.kill()
                n += 1
        for w in list(stalled):
            rst(w)
            n += 1
        return f"ok {n}"
    return f"err unknown command {line!r}"


async def on_control(reader, writer):
    try:
        line = (await reader.readline()).decode(errors="replace").strip()
        try:
            reply = await command(line)
        except Exception as e:  # noqa: BLE001 - report to the test instead of dying
            reply = f"err {e!r}"
        print(f"control: {line} -> {reply}", flush=True)
        writer.write((reply + "\n").encode())
        await writer.drain()
    finally:
        writer.close()


async def main():
    await listen()
    try:
        os.unlink(ctl_path)
    except FileNotFoundError:
        pass
    ctl = await asyncio.start_unix_server(on_control, ctl_path)
    print(
        f"fault proxy {listen_host}:{listen_port} -> {target_host}:{target_port}, control {ctl_path}",
        flush=True,
    )
    async with ctl:
        await ctl.serve_forever()


asyncio.run(main())
