"""Opening a new HTTP connection, for the HTTP/1.1 and the HTTP/2 transport.

TCP, then TLS for ``https`` (the context's ALPN protocols decide what may be negotiated):
both transports get a plain non-blocking socket and a
:class:`~patient_sidekiq.http.tls_session.TlsSession` run on its descriptor
(:func:`open_socket`), which cost a fraction of trio ``SSLStream``'s CPU.
:func:`open_stream` (an ``SSLStream``) is kept as the reference the TLS tests compare with. A
connection to an IP address is opened with a non-blocking ``connect`` rather than
``trio.open_tcp_stream``, whose happy-eyeballs nursery cost more than the rest of a new
connection when thousands open at once; names still go through trio's resolver. Failures
read as trio's do ("Error connecting to (host, port): …"), which ``ruby_errors`` turns into
the gem's ``connect(2) for host:port`` message.

Errors are httpx's: ConnectError (from the OSError, or from the ssl.SSLError of a failed
handshake). ``with_retries`` repeats a failed connect as httpcore's ``retries`` do. Touches
no Redis keys.
"""

from __future__ import annotations

import errno
import functools
import os
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import httpx
import trio

from patient_sidekiq.http.targets import Origin
from patient_sidekiq.http.tls_session import TlsSession

__all__ = ["open_plain", "open_socket", "open_stream", "with_retries"]

_T = TypeVar("_T")
_NONBLOCK: Final[int] = getattr(socket, "SOCK_NONBLOCK", 0)  # Linux


async def open_stream(
    origin: Origin, ssl_context: ssl.SSLContext
) -> tuple[trio.abc.Stream, trio.SocketStream]:
    """A new stream to ``origin`` and its TCP stream: TCP, then TLS for ``https``.

    Raises httpx.ConnectError when either fails.
    """
    scheme, host, port = origin
    tcp = await _open_tcp(host, port)
    if scheme != "https":
        return tcp, tcp
    stream = trio.SSLStream(tcp, ssl_context, server_hostname=host, https_compatible=True)
    try:
        await stream.do_handshake()
    except (trio.BrokenResourceError, OSError) as exc:
        tcp.socket.close()
        cause = exc.__cause__ if isinstance(exc.__cause__, ssl.SSLError) else exc
        raise httpx.ConnectError(str(cause) or type(cause).__name__) from exc
    except BaseException:
        tcp.socket.close()
        raise
    return stream, tcp


async def open_socket(
    origin: Origin, ssl_context: ssl.SSLContext
) -> tuple[socket.socket, TlsSession | None]:
    """A new TCP connection to ``origin`` (a non-blocking socket, ``TCP_NODELAY`` set), and
    for ``https`` its TLS session, handshake done. The caller closes the socket.

    Raises httpx.ConnectError when either fails, as :func:`open_stream` does.
    """
    scheme, host, port = origin
    sock, _ = await open_plain(host, port, b"")
    if scheme != "https":
        return sock, None
    session = TlsSession(ssl_context, host)
    try:
        await session.handshake(sock.fileno())
    except (OSError, trio.ClosedResourceError) as exc:  # ssl.SSLError is an OSError
        sock.close()
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
    except BaseException:
        sock.close()
        raise
    return sock, session


async def open_plain(host: str, port: int, data: bytes) -> tuple[socket.socket, int]:
    """A new TCP connection to ``host``:``port`` (a non-blocking socket, ``TCP_NODELAY``
    set) with the first bytes of ``data`` (``b""``: none) written as soon as the kernel takes
    them; and how many it took. Raises httpx.ConnectError when the connect fails."""
    family = _literal_family(host)
    try:
        if family is None:
            # A name: trio's resolver and happy eyeballs, then the socket out of its stream.
            stream = await trio.open_tcp_stream(host, port)
            return socket.socket(fileno=stream.socket.detach()), 0
        return await _connect_socket(family, host, port, data)
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc


async def _open_tcp(host: str, port: int) -> trio.SocketStream:
    family = _literal_family(host)
    try:
        if family is None:
            return await trio.open_tcp_stream(host, port)
        sock, _ = await _connect_socket(family, host, port)
    except OSError as exc:
        raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
    return trio.SocketStream(trio.socket.from_stdlib_socket(sock))


async def with_retries(connect: Callable[[], Awaitable[_T]], retries: int) -> _T:
    """``connect()``, and up to ``retries`` more attempts after a failed connect (0 s, then
    0.5 s, 1 s … apart, as httpcore's ``retries``)."""
    delay = 0.0
    for attempt in range(retries + 1):
        try:
            return await connect()
        except (httpx.ConnectError, httpx.ConnectTimeout):
            if attempt == retries:
                raise
        await trio.sleep(delay)
        delay = 0.5 if delay == 0 else delay * 2
    raise AssertionError("unreachable")  # pragma: no cover


@functools.lru_cache(maxsize=1024)
def _literal_family(host: str) -> int | None:
    """The address family of an IP literal host, None for a name to resolve."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _connect_socket(
    family: int, host: str, port: int, data: bytes = b""
) -> tuple[socket.socket, int]:
    """Connect to an IP address without trio.open_tcp_stream's happy-eyeballs nursery, which
    cost more than the rest of a new connection (thousands are opened at once in a fan-out),
    nor trio's socket wrappers: a plain non-blocking socket, waiting on trio only while the
    kernel connects. Failures read as trio's do ("Error connecting to (host, port): …"),
    which ruby_errors turns into the gem's ``connect(2) for host:port`` message.

    ``data`` (the request, for plain HTTP) is written at once, before any wait: the kernel
    takes it as soon as the connection is up (always, to a local server), which spares the
    trip through trio's scheduler that waiting for the connect would cost. Returns the socket
    and how many bytes of ``data`` went out."""
    address: tuple[str, int] | tuple[str, int, int, int] = (
        (host, port) if family == socket.AF_INET else (host, port, 0, 0)
    )
    # non-blocking from its creation where the kernel allows (two fcntl calls fewer)
    sock = socket.socket(family, socket.SOCK_STREAM | _NONBLOCK)
    sent = 0
    try:
        if not _NONBLOCK:
            sock.setblocking(False)
        # requests go out in one write: no reason to wait for an ACK before sending
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        error = sock.connect_ex(address)
        if (
            error == errno.EINPROGRESS
            and data
            and trio.current_effective_deadline() > trio.current_time()
        ):
            # Linux refuses a write while the handshake is under way (EAGAIN), and a write
            # on a failed connect reports (and clears) the connect's error: the one
            # SO_ERROR would have given. (Past the deadline, the wait below raises as a
            # connect always did: nothing is sent.)
            try:
                sent = os.write(sock.fileno(), data)
                error = 0
            except BlockingIOError:
                pass
            except OSError as exc:
                # (ENOTCONN: a kernel that says "not yet" that way; the wait decides)
                error = errno.EINPROGRESS if exc.errno == errno.ENOTCONN else exc.errno or errno.EIO
        if error == errno.EINPROGRESS:
            await trio.lowlevel.wait_writable(sock)
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    except BaseException:
        sock.close()
        raise
    if error:
        sock.close()
        raise OSError(error, f"Error connecting to {address!r}: {os.strerror(error)}")
    return sock, sent
