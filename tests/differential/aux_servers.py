"""Two small servers the oracle's HTTP test server does not offer, in threads of their own.

- a redirector on a second origin: ``/to?url=U`` answers ``302`` to ``U`` (cross-origin
  redirects, header stripping);
- a TLS server whose certificate is signed by a CA nobody trusts (verification failures).

Both answer deterministically, like the oracle's server.
"""

from __future__ import annotations

import contextlib
import hashlib
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import trio

from tests.support.http import TlsCerts, generate_certs, start_hypercorn

_RAW: dict[str, bytes] = {
    "/odd_headers": (
        b"HTTP/1.1 200 OK\r\n"
        b"content-type: text/plain\r\ncontent-type: text/html\r\n"
        b"x-comma: p ,q,  r\r\nx-multi: a\r\nx-multi: b,c\r\n"
        b"cache-control: Public, Max-Age=5\r\nvary: Accept-Encoding\r\n"
        b"www-authenticate: Basic\r\nwww-authenticate: Bearer\r\n"
        b"set-cookie: a=1; Path=/\r\nset-cookie: b=2\r\n"
        b'etag: "one"\r\netag: "two"\r\nx-empty: \r\nupgrade: h2c\r\n'
        b"content-length: 3\r\n\r\nodd"
    ),
    "/not_modified": b'HTTP/1.1 304 Not Modified\r\netag: "a"\r\ncontent-length: 5\r\n\r\n',
    "/empty_chunked": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n"
        b"0\r\n\r\n"
    ),
    "/content_length_0": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 0\r\n\r\n"
    ),
    "/close_delimited_empty": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n"
    ),
    "/brotli_label": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        b"content-encoding: br\r\ncontent-length: 4\r\n\r\n\x0b\x01\x80\x03"
    ),
    "/non_ascii_no_charset": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\n\r\nh\xc3\xa9llo"
    ),
    "/bad_json": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{not json"
    ),
    "/invalid_utf8": (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\n"
        b"content-length: 4\r\n\r\nok\xff\xfe"
    ),
    "/json_upper_charset": (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json; Charset=UTF-8\r\n"
        b'content-length: 11\r\n\r\n{"k":"\xc3\xa9"}'
    ),
}


class _Redirector(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        path = urlsplit(self.path).path
        if path == "/close_no_answer":
            self.close_connection = True  # the client sees EOF before any status line
            return
        if path == "/typed":
            # /typed?type=<content-type>: a small non-ASCII UTF-8 body under any label
            content_type = parse_qs(urlsplit(self.path).query).get("type", [""])[0]
            self._send(200, content_type, "h\u00e9llo \u2603\n".encode())
            return
        if path == "/noise":
            # bytes that do not compress, so a payload stays over the store threshold
            size = int(parse_qs(urlsplit(self.path).query).get("size", ["4096"])[0])
            self._send(200, "application/octet-stream", noise(size))
            return
        if path in _RAW:
            # Written byte for byte: odd framing and repeated headers http.server would not.
            self.close_connection = path == "/close_delimited_empty"
            self.wfile.write(_RAW[path])
            return
        target = parse_qs(urlsplit(self.path).query).get("url", ["/"])[0]
        self._send(302, "text/plain; charset=utf-8", b"redirecting\n", location=target)

    def _send(self, status: int, content_type: str, body: bytes, location: str = "") -> None:
        self.send_response(status)
        if location:
            self.send_header("location", location)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the test reads no access log."""

    def version_string(self) -> str:
        return "aux"

    def date_time_string(self, timestamp: float | None = None) -> str:
        return "Thu, 01 Jan 2026 00:00:00 GMT"


def noise(size: int) -> bytes:
    """``size`` deterministic bytes that gzip cannot shrink (a SHA-256 chain)."""
    out = bytearray()
    block = b"differential"
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block
    return bytes(out[:size])


@dataclass(frozen=True)
class AuxServers:
    """Base URLs of the redirector, of the untrusted TLS server and of the HTTP/2 server.

    ``ca_file`` signed both TLS servers' certificates: a group that trusts it (the gem
    through ``SSL_CERT_FILE``, ours through ``--ca-bundle``) reaches ``h2`` over TLS with
    ALPN ``h2``; nobody trusts it otherwise.
    """

    redirector: str
    untrusted_tls: str
    h2: str
    ca_file: str
    blackhole: str
    """A port whose accept queue is full: connecting hangs until the client gives up."""


class _TlsServer(ThreadingHTTPServer):
    """The handshake runs in each connection's own thread. A listening socket wrapped whole
    would run it inside accept(), in the one thread serving them all: a client that connects
    and waits (a pool opening a spare connection) would stall every other one."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        context: ssl.SSLContext,
    ) -> None:
        super().__init__(address, handler)
        self.context = context

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            tls = self.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError):
            return  # an untrusting client hangs up mid-handshake: nothing to serve
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            tls.close()


def _serve(server: ThreadingHTTPServer) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _hypercorn_tls(certs: TlsCerts) -> Iterator[str]:
    """The test app (``tests/support/http.py``) over TLS, HTTP/2 by ALPN, in a thread."""
    ready: dict[str, Any] = {}
    started = threading.Event()

    async def serve() -> None:
        async with trio.open_nursery() as nursery:
            server = await start_hypercorn(nursery, certs)
            ready.update(
                url=server.url(""),
                token=trio.lowlevel.current_trio_token(),
                cancel=nursery.cancel_scope.cancel,
            )
            started.set()

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as exc:  # reported by the waiting thread
            ready["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="differential-h2", daemon=True)
    thread.start()
    if not started.wait(30) or "error" in ready:
        raise AssertionError(f"the HTTP/2 test server did not start: {ready.get('error')!r}")
    try:
        yield str(ready["url"])
    finally:
        ready["token"].run_sync_soon(ready["cancel"])
        thread.join(15)


@contextlib.contextmanager
def _blackhole() -> Iterator[str]:
    """Listen with a backlog of 0 and never accept; fill the queue, so SYNs are dropped."""
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(socket.socket())
        server.bind(("127.0.0.1", 0))
        server.listen(0)
        port = server.getsockname()[1]
        for _ in range(3):
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
        yield f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def aux_servers() -> Iterator[AuxServers]:
    """Start both servers on free loopback ports; stop them on exit."""
    with tempfile.TemporaryDirectory(prefix="differential-tls-") as directory:
        certs = generate_certs(Path(directory))
        plain = ThreadingHTTPServer(("127.0.0.1", 0), _Redirector)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certs.cert_file, certs.key_file)
        tls = _TlsServer(("127.0.0.1", 0), _Redirector, context)
        threads = [_serve(plain), _serve(tls)]
        try:
            with _hypercorn_tls(certs) as h2, _blackhole() as blackhole:
                yield AuxServers(
                    redirector=f"http://localhost:{plain.server_address[1]}",
                    untrusted_tls=f"https://127.0.0.1:{tls.server_address[1]}",
                    h2=h2,
                    ca_file=str(certs.ca_file),
                    blackhole=blackhole,
                )
        finally:
            for server in (plain, tls):
                server.shutdown()
                server.server_close()
            for thread in threads:
                thread.join(5)
