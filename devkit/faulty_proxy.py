"""A small fault-injecting HTTP proxy on 127.0.0.1, for putting in front of moto's S3 server in tests.

Every request is forwarded to the upstream endpoint unless the proxy's current plan says to fail it:

* ``transient(every, limit)``: every ``every``-th request is answered with 503 Slow Down or has its
  connection reset (alternately), at most ``limit`` times: what a flaky bucket does.
* ``outage(path_fragment)``: every request whose path contains the fragment gets a 503: an object or a
  prefix that stays unreachable for the rest of the run.
* ``healthy()``: forward everything.

Counts of forwarded and failed requests are kept so a test can prove faults really happened. The proxy
runs in a thread and stops when its context manager exits; it only ever listens on loopback.
"""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Headers that describe one hop, not the message: never forwarded (RFC 9110 §7.6.1).
_HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te"}


@dataclass
class FaultPlan:
    """What the proxy does to the requests it sees, and what it has done so far."""

    every: int = 0
    limit: int = 0
    path_fragment: str = ""
    seen: int = 0
    failed: int = 0
    forwarded: int = 0
    failed_paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def decide(self, path: str) -> str:
        """``forward``, ``503`` or ``reset`` for the next request."""
        with self.lock:
            self.seen += 1
            if self.path_fragment and self.path_fragment in path:
                action = "503"
            elif self.every and self.seen % self.every == 0 and self.failed < self.limit:
                action = "503" if self.failed % 2 == 0 else "reset"
            else:
                self.forwarded += 1
                return "forward"
            self.failed += 1
            self.failed_paths.append(path)
            return action


class FaultyProxy:
    """Handle to a running proxy: its endpoint and its plan (change the plan between runs)."""

    def __init__(self, endpoint: str, plan: FaultPlan) -> None:
        self.endpoint = endpoint
        self.plan = plan

    def transient(self, every: int, limit: int) -> None:
        """Fail every ``every``-th request, at most ``limit`` times from now on."""
        self.plan = FaultPlan(every=every, limit=limit)

    def outage(self, path_fragment: str) -> None:
        """Fail every request whose path contains ``path_fragment``."""
        self.plan = FaultPlan(path_fragment=path_fragment)

    def healthy(self) -> None:
        """Forward everything."""
        self.plan = FaultPlan()


def _handler(upstream: str, proxy: list[FaultyProxy]) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per request would drown the test output."""

        def _relay(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            action = proxy[0].plan.decide(self.path)
            if action == "reset":
                # SO_LINGER 0 makes close() send RST: the client sees a connection reset, not a clean EOF.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if action == "503":
                payload = b"<Error><Code>SlowDown</Code><Message>injected fault</Message></Error>"
                self.send_response(503)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                # A HEAD answer has no body: bytes after its headers would be read as the next answer on
                # the connection (botocore: "Bad status line"), a protocol error no real store makes.
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
            finally:
                conn.close()
            self.send_response(response.status, response.reason)
            for key, value in response.getheaders():
                if key.lower() not in _HOP_HEADERS and key.lower() != "content-length":
                    self.send_header(key, value)
            # A HEAD answer has no body but must state the object's size, which clients read as its length.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


@contextmanager
def faulty_proxy(upstream: str) -> Iterator[FaultyProxy]:
    """Runs a fault-injecting proxy on 127.0.0.1 in front of ``upstream``; yields it, then stops it."""
    holder: list[FaultyProxy] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(upstream, holder))
    server.daemon_threads = True
    handle = FaultyProxy(f"http://127.0.0.1:{server.server_address[1]}", FaultPlan())
    holder.append(handle)
    thread = threading.Thread(target=server.serve_forever, name="faulty-proxy", daemon=True)
    thread.start()
    try:
        yield handle
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
