"""Real local HTTP servers for the HTTP client tests (fixtures in ``tests/conftest.py``).

* ``http_server``: hypercorn serving :func:`app` over plain HTTP/1.1 on 127.0.0.1.
* ``tls_server``: the same app over TLS with ALPN ``h2``/``http/1.1``, using a certificate
  signed by a CA generated for the test session (``tls_certs.ca_file``).
* ``reset_server``: a raw TCP server that reads the request and resets the connection
  (SO_LINGER 0), for a genuine ECONNRESET.

Servers run in the test's own trio loop (pytest-trio's ``nursery`` fixture), on free ports
chosen by the kernel, and stop when the test ends.

Endpoints of :func:`app`: ``/echo`` (method, headers, body, query, http_version as JSON),
``/status/<code>``, ``/slow?seconds=``, ``/slow-body?seconds=`` (headers and a first chunk
at once, the rest later), ``/redirect/<n>`` (relative chain down to 0),
``/redirect-to?url=&status=``, ``/loop`` ↔ ``/loop/b``, ``/big?bytes=&length=0|1``,
``/gzip`` (JSON, or ``?bytes=`` zeros), ``/deflate``, ``/charset`` (latin1),
``/multi`` (repeated headers), ``/reset`` (aborts mid-body).
"""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import socket
import struct
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs

import httpx
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.config import Config
from hypercorn.trio import serve

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class AbortConnection(Exception):
    """Raised by the app after a partial body so that hypercorn drops the connection."""


async def _read_body(receive: Receive) -> bytes:
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


async def _respond(
    send: Send,
    status: int,
    body: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    content_length: bool = True,
) -> None:
    all_headers = list(headers or [])
    if content_length:
        all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app every test server runs."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    path: str = scope["path"]
    query = {k: v[-1] for k, v in parse_qs(scope["query_string"].decode("latin-1")).items()}
    body = await _read_body(receive)
    if path == "/echo" or path == "/redirect/0":
        echo = {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode("latin-1"),
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
            "body": body.decode("latin-1"),
            "http_version": scope["http_version"],
        }
        data = json.dumps(echo).encode()
        await _respond(send, 200, data, [(b"content-type", b"application/json")])
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        await _respond(send, status, b"" if status in (204, 304) else f"status {status}".encode())
    elif path == "/slow":
        await trio.sleep(float(query.get("seconds", "1")))
        await _respond(send, 200, b"slow")
    elif path == "/slow-body":
        start = {"type": "http.response.start", "status": 200, "headers": []}
        await send(start)
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await trio.sleep(float(query.get("seconds", "1")))
        await send({"type": "http.response.body", "body": b"last"})
    elif path.startswith("/redirect/"):
        n = int(path.rsplit("/", 1)[1])
        await _respond(send, 302, b"", [(b"location", f"/redirect/{n - 1}".encode())])
    elif path == "/redirect-to":
        status = int(query.get("status", "302"))
        await _respond(send, status, b"moved", [(b"location", query.get("url", "").encode())])
    elif path in ("/loop", "/loop/b"):
        target = b"/loop/b" if path == "/loop" else b"/loop"
        await _respond(send, 302, b"", [(b"location", target)])
    elif path == "/big":
        await _big(send, int(query.get("bytes", "0")), query.get("length", "1") == "1")
    elif path == "/gzip":
        raw = b"\0" * int(query["bytes"]) if "bytes" in query else b'{"gzipped": true}'
        await _respond(
            send,
            200,
            gzip.compress(raw),
            [(b"content-type", b"application/json"), (b"content-encoding", b"gzip")],
        )
    elif path == "/deflate":
        headers = [(b"content-type", b"text/plain"), (b"content-encoding", b"deflate")]
        await _respond(send, 200, zlib.compress(b"deflated text"), headers)
    elif path == "/charset":
        headers = [(b"content-type", b"text/plain; charset=iso-8859-1")]
        await _respond(send, 200, "café".encode("latin-1"), headers)
    elif path == "/multi":
        headers = [
            (b"set-cookie", b"a=1; Path=/"),
            (b"set-cookie", b"b=2; Path=/"),
            (b"x-multi", b"one"),
            (b"X-Multi", b"two"),
        ]
        await _respond(send, 200, b"multi", headers)
    elif path == "/reset":
        headers = [(b"content-length", b"1000")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise AbortConnection("dropping the connection on purpose")
    else:
        await _respond(send, 404, b"not found")


async def _big(send: Send, size: int, with_length: bool) -> None:
    headers = [(b"content-type", b"application/octet-stream")]
    if with_length:
        headers.append((b"content-length", str(size).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    chunk = b"x" * 65536
    remaining = size
    while remaining > 0:
        piece = chunk[: min(remaining, len(chunk))]
        remaining -= len(piece)
        await send({"type": "http.response.body", "body": piece, "more_body": remaining > 0})
    if size == 0:
        await send({"type": "http.response.body", "body": b""})


@dataclass(frozen=True)
class TlsCerts:
    """Files of a CA generated for the session and a server certificate it signed."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def generate_certs(directory: Path) -> TlsCerts:
    """Write a CA and a server certificate for 127.0.0.1 and localhost into ``directory``."""
    now = datetime.datetime.now(datetime.UTC)
    validity = (now - datetime.timedelta(days=1), now + datetime.timedelta(days=7))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("patient-sidekiq test CA"))
        .issuer_name(_name("patient-sidekiq test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    certs = TlsCerts(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    certs.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    certs.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certs


@dataclass(frozen=True)
class Server:
    """A running test server: ``url("/echo")`` on 127.0.0.1, ``url(..., host="localhost")``."""

    scheme: str
    port: int

    def url(self, path: str, *, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"


async def start_hypercorn(nursery: trio.Nursery, certs: TlsCerts | None = None) -> Server:
    """Start hypercorn with :func:`app` in ``nursery``; it stops when the nursery is cancelled."""
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    config.keep_alive_timeout = 30
    config.backlog = 2048
    if certs is not None:
        config.certfile = str(certs.cert_file)
        config.keyfile = str(certs.key_file)
    binds = await nursery.start(partial(serve, cast(Any, app), config, mode="asgi"))
    port = int(binds[0].rsplit(":", 1)[1])
    return Server("https" if certs is not None else "http", port)


async def reset_handler(stream: trio.SocketStream) -> None:
    try:
        await stream.receive_some(65536)
    except trio.BrokenResourceError:
        return
    # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
    stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


TRANSPORT_TIMEOUTS: dict[str, float] = {"connect": 5.0, "read": 5.0, "write": 5.0, "pool": 5.0}


async def fetch_through(
    transport: httpx.AsyncBaseTransport,
    url: str,
    method: str = "GET",
    content: bytes | None = None,
    headers: list[tuple[str, str]] | None = None,
    timeouts: dict[str, float] | None = None,
) -> tuple[httpx.Response, bytes, int]:
    """Send one request straight through ``transport``; the response, its whole body and how
    many chunks the body came in."""
    request = httpx.Request(
        method,
        url,
        content=content,
        headers=headers,
        extensions={"timeout": timeouts or TRANSPORT_TIMEOUTS},
    )
    response = await transport.handle_async_request(request)
    chunks: list[bytes] = []
    try:
        assert isinstance(response.stream, httpx.AsyncByteStream)
        async for chunk in response.stream:
            chunks.append(chunk)
    finally:
        await response.aclose()
    return response, b"".join(chunks), len(chunks)
