"""A request-counting HTTP proxy on 127.0.0.1, for putting in front of moto's S3 server in benchmarks.

Every request is forwarded unchanged to the upstream endpoint and counted by its S3 verb:

========= =======================================================================================
verb      requests
========= =======================================================================================
GET       object reads (GetObject, ranged or whole)
LIST      bucket listings: ListObjectsV2 (``list-type=2``), ListObjects, ListObjectVersions,
          ListMultipartUploads, and ListParts (``GET`` with ``uploadId``)
HEAD      HeadObject and HeadBucket
PUT       PutObject and UploadPart (also CreateBucket)
COPY      a PUT with ``x-amz-copy-source``: CopyObject, UploadPartCopy
POST      CreateMultipartUpload, CompleteMultipartUpload, DeleteObjects (``?delete``)
DELETE    DeleteObject, AbortMultipartUpload
OTHER     anything else (bucket configuration reads such as ``?location``)
========= =======================================================================================

Counts are kept overall and per *area*: a caller-given function of ``(bucket, key)`` (for a LIST the key
is its ``prefix`` parameter), by default the bucket and the first part of the key (``fleet/robot3``). A
*focus* substring, when set, also counts the requests whose key (or listing prefix) contains it, so a
benchmark can tell the requests that touch one dataset from the others. Counting is thread-safe;
:meth:`CountingProxy.reset` starts a new phase, :meth:`CountingProxy.snapshot` reads the counts, and
snapshots subtract (``later - earlier``) to give what a phase did.

Forwarding keeps one upstream connection per client connection (keep-alive on both sides), so the proxy
adds a loopback hop, not a TCP handshake, per request. It runs in threads and stops when its context
manager exits; it only ever listens on loopback. :mod:`devkit.fleet` runs one in a server process
next to moto, so that the driver being measured shares its interpreter with neither.
"""

from __future__ import annotations

import http.client
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = [
    "VERBS",
    "CountSnapshot",
    "CountingProxy",
    "RequestCounts",
    "bucket_area",
    "classify",
    "counting_proxy",
]

VERBS = ("GET", "LIST", "HEAD", "PUT", "COPY", "POST", "DELETE", "OTHER")

# Headers that describe one hop, not the message: never forwarded (RFC 9110 §7.6.1). The body is read
# whole and re-sent with its length, so the client's framing (chunked, 100-continue) stays on its hop.
_HOP_HEADERS = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "expect",
    "content-length",
}
# Query parameters of a plain bucket listing (ListObjects / ListObjectsV2); any other parameter on a
# bucket-level GET names a sub-resource (location, versioning, ...).
_LISTING_PARAMS = {
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "marker",
    "continuation-token",
    "start-after",
    "encoding-type",
    "fetch-owner",
    "x-id",
}
_LISTING_SUBRESOURCES = {"versions", "uploads"}

Area = Callable[[str, str], str]


def bucket_area(bucket: str, key: str) -> str:
    """The default area of a request: its bucket and the first part of its key (``fleet/robot3``)."""
    first = key.split("/", 1)[0]
    return f"{bucket}/{first}" if first else bucket


def classify(method: str, target: str, headers: Mapping[str, str]) -> tuple[str, str, str]:
    """``(verb, bucket, key)`` of one path-style S3 request; for a LIST the key is its ``prefix``.

    Args:
        method: The HTTP method.
        target: The request target as sent (``/bucket/key?query``), percent-encoded.
        headers: The request headers (any case).
    """
    parts = urlsplit(target)
    bucket, _, key = parts.path.lstrip("/").partition("/")
    bucket, key = unquote(bucket), unquote(key)
    query = parse_qs(parts.query, keep_blank_values=True)
    method = method.upper()
    if method == "HEAD":
        return "HEAD", bucket, key
    if method == "GET":
        if key:
            return ("LIST" if "uploadId" in query else "GET"), bucket, key
        prefix = query.get("prefix", [""])[0]
        if set(query) <= _LISTING_PARAMS or set(query) & _LISTING_SUBRESOURCES:
            return "LIST", bucket, prefix
        return "OTHER", bucket, prefix
    if method == "PUT":
        copy = any(name.lower() == "x-amz-copy-source" for name in headers)
        return ("COPY" if copy else "PUT"), bucket, key
    if method in ("POST", "DELETE"):
        return method, bucket, key
    return "OTHER", bucket, key


@dataclass(frozen=True)
class CountSnapshot:
    """Requests counted so far: by verb, by ``(area, verb)``, and by verb for keys holding the focus."""

    verbs: dict[str, int] = field(default_factory=dict)
    areas: dict[tuple[str, str], int] = field(default_factory=dict)
    focus: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Every request counted."""
        return sum(self.verbs.values())

    def verb(self, name: str) -> int:
        """Requests of one verb (0 when none)."""
        return self.verbs.get(name, 0)

    def area_totals(self) -> dict[str, int]:
        """Requests per area, all verbs together."""
        totals: Counter[str] = Counter()
        for (area, _), count in self.areas.items():
            totals[area] += count
        return dict(totals)

    def __sub__(self, earlier: CountSnapshot) -> CountSnapshot:
        """What was counted after ``earlier`` was taken (zero counts left out)."""

        def minus(now: Mapping[Any, int], then: Mapping[Any, int]) -> dict[Any, int]:
            return {key: now[key] - then.get(key, 0) for key in now if now[key] - then.get(key, 0)}

        return CountSnapshot(
            minus(self.verbs, earlier.verbs),
            minus(self.areas, earlier.areas),
            minus(self.focus, earlier.focus),
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON values (areas as ``[area, verb, count]`` triples)."""
        return {
            "verbs": dict(self.verbs),
            "areas": [[area, verb, count] for (area, verb), count in sorted(self.areas.items())],
            "focus": dict(self.focus),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CountSnapshot:
        """The inverse of :meth:`to_json`."""
        return cls(
            dict(data["verbs"]),
            {(area, verb): count for area, verb, count in data["areas"]},
            dict(data.get("focus", {})),
        )


class RequestCounts:
    """Thread-safe request counters, resettable between phases."""

    def __init__(self, area: Area = bucket_area) -> None:
        self._area = area
        self._lock = threading.Lock()
        self._verbs: Counter[str] = Counter()
        self._areas: Counter[tuple[str, str]] = Counter()
        self._focused: Counter[str] = Counter()
        self._focus = ""

    def add(self, verb: str, bucket: str, key: str) -> None:
        """Counts one request."""
        area = self._area(bucket, key)
        with self._lock:
            self._verbs[verb] += 1
            self._areas[(area, verb)] += 1
            if self._focus and self._focus in key:
                self._focused[verb] += 1

    def focus(self, fragment: str) -> None:
        """Also count, by verb, the requests whose key or listing prefix contains ``fragment`` ("": off)."""
        with self._lock:
            self._focus = fragment
            self._focused.clear()

    def snapshot(self) -> CountSnapshot:
        """The counts now (a copy)."""
        with self._lock:
            return CountSnapshot(dict(self._verbs), dict(self._areas), dict(self._focused))

    def reset(self) -> None:
        """Sets every count to zero (the focus stays)."""
        with self._lock:
            self._verbs.clear()
            self._areas.clear()
            self._focused.clear()


class CountingProxy:
    """Handle to a running counting proxy: its endpoint and its counts."""

    def __init__(self, endpoint: str, counts: RequestCounts) -> None:
        self.endpoint = endpoint
        self.counts = counts

    def snapshot(self) -> CountSnapshot:
        """The requests counted since the start or the last :meth:`reset`."""
        return self.counts.snapshot()

    def reset(self) -> None:
        """Starts counting from zero (a new phase)."""
        self.counts.reset()

    def focus(self, fragment: str) -> None:
        """Also count the requests whose key contains ``fragment`` (see :meth:`RequestCounts.focus`)."""
        self.counts.focus(fragment)


def _read_body(handler: BaseHTTPRequestHandler) -> bytes | None:
    """The request body, whether sent with a length or chunked."""
    if "chunked" in (handler.headers.get("Transfer-Encoding") or "").lower():
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                break
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()
        return b"".join(chunks)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else None


def _handler(upstream: str, counts: RequestCounts) -> type[BaseHTTPRequestHandler]:
    target = urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        upstream_conn: http.client.HTTPConnection | None = None

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: one line per request would drown the output."""

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in separate writes: with Nagle's algorithm the body waits for the
            # client's delayed ACK, ~40 ms per answer on loopback.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _connect(self) -> http.client.HTTPConnection:
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return conn

        def _forward(self, body: bytes | None, headers: dict[str, str]) -> tuple[Any, bytes]:
            # One upstream connection per client connection; a connection the upstream closed while
            # idle is reopened once (nothing of this request was answered yet, so resending is safe).
            for attempt in (1, 2):
                try:
                    if self.upstream_conn is None:
                        self.upstream_conn = self._connect()
                    self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                    response = self.upstream_conn.getresponse()
                    payload = response.read()
                except (http.client.RemoteDisconnected, ConnectionError, http.client.CannotSendRequest):
                    if self.upstream_conn is not None:
                        self.upstream_conn.close()
                    self.upstream_conn = None
                    if attempt == 2:
                        raise
                    continue
                if response.will_close:
                    self.upstream_conn.close()
                    self.upstream_conn = None
                return response, payload
            raise AssertionError("unreachable")

        def _relay(self) -> None:
            body = _read_body(self)
            verb, bucket, key = classify(self.command, self.path, self.headers)
            counts.add(verb, bucket, key)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_HEADERS}
            if body is not None or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body or b""))
            response, payload = self._forward(body, headers)
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_HEADERS:
                    self.send_header(name, value)
            # A HEAD answer has no body but states the object's size, which clients read as its length.
            length = response.getheader("Content-Length") if self.command == "HEAD" else None
            self.send_header("Content-Length", length or str(len(payload)))
            self.end_headers()
            if self.command != "HEAD" and payload:
                self.wfile.write(payload)

        def finish(self) -> None:
            super().finish()
            if self.upstream_conn is not None:
                self.upstream_conn.close()

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # Many clients (the driver's pool and every Ray worker's) may connect at once.
    request_queue_size = 256


@contextmanager
def counting_proxy(upstream: str, area: Area = bucket_area) -> Iterator[CountingProxy]:
    """Runs a counting proxy on 127.0.0.1 in front of ``upstream``; yields it, then stops it.

    Args:
        upstream: The endpoint requests are forwarded to, e.g. moto's ``http://127.0.0.1:<port>``.
        area: ``(bucket, key) -> area name`` for the per-area counts (default :func:`bucket_area`).
    """
    counts = RequestCounts(area)
    server = _Server(("127.0.0.1", 0), _handler(upstream, counts))
    thread = threading.Thread(target=server.serve_forever, name="counting-proxy", daemon=True)
    thread.start()
    try:
        yield CountingProxy(f"http://127.0.0.1:{server.server_address[1]}", counts)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
