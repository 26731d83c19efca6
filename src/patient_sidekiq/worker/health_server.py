"""A tiny HTTP/1.1 server on the worker's trio loop: ``GET /metrics`` and ``GET /health``.

Role: :class:`OpsServer` serves the sockets :func:`bind` opened on ``metrics_host:metrics_port``
and answers each connection with one response, then closes it (``Connection: close``).
Requests are parsed by h11. What it serves comes from ``routes`` (path → a function
returning status, content type, body), called on the loop itself, so they must be quick
and must not block.

A client must not be able to hurt the worker, whatever it sends:

* at most :data:`MAX_CLIENTS` connections are served at once; others wait in the kernel's
  backlog (the accept loop pauses), so a flood cannot multiply tasks or descriptors;
* a request head larger than :data:`MAX_REQUEST_BYTES` is refused (431/400) and a body is
  never read;
* a connection gets :data:`CLIENT_TIMEOUT` seconds in all, to send its request and read
  the answer, then it is dropped (a slow client holds a slot, never the loop);
* any error of one connection ends that connection only; running out of descriptors
  (``EMFILE`` while thousands of requests are in flight) pauses accepting, briefly.

Touches no Redis keys.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from typing import Any, Final

import h11
import trio

__all__ = ["CLIENT_TIMEOUT", "MAX_CLIENTS", "MAX_REQUEST_BYTES", "OpsServer", "Reply", "bind"]

log = logging.getLogger(__name__)

MAX_CLIENTS: Final = 16
CLIENT_TIMEOUT: Final = 5.0
MAX_REQUEST_BYTES: Final = 8192
_ACCEPT_PAUSE: Final = 0.1
_DRAIN_BYTES: Final = 256 * 1024
_DRAIN_SECONDS: Final = 1.0
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})

_KNOWN_STATUSES: Final = frozenset(HTTPStatus)

Reply = tuple[int, str, bytes]
"""``(status, content type, body)``."""


def bind(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address ``host`` names (all interfaces when empty).

    Synchronous, so a taken port is found before the worker starts (raises OSError).
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, protocol, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind | socket.SOCK_CLOEXEC, protocol)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # "::" and "0.0.0.0" side by side, as trio does
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(MAX_CLIENTS)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class OpsServer:
    """Serves ``routes`` (exact paths, query ignored) to GET and HEAD requests."""

    def __init__(self, routes: Mapping[str, Callable[[], Reply]]) -> None:
        self.routes = dict(routes)
        self._slots = trio.Semaphore(MAX_CLIENTS)

    async def serve(
        self, sockets: Sequence[socket.socket], *, task_status: Any = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve on ``sockets`` (from :func:`bind`) until cancelled; they are closed then."""
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        try:
            async with trio.open_nursery() as nursery:
                for listener in listeners:
                    nursery.start_soon(self._accept_loop, listener, nursery)
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                for listener in listeners:
                    await listener.aclose()

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            await self._slots.acquire()
            try:
                stream = await listener.accept()
            except OSError as exc:
                self._slots.release()
                if exc.errno in _OUT_OF_RESOURCES:
                    log.debug("metrics endpoint: cannot accept (%s); pausing", exc)
                else:
                    log.warning("metrics endpoint: accept failed: %s", exc)
                await trio.sleep(_ACCEPT_PAUSE)
                continue
            except BaseException:
                self._slots.release()
                raise
            nursery.start_soon(self._serve_client, stream)

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(CLIENT_TIMEOUT):
                await self._exchange(stream)
        except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
            log.debug("metrics endpoint: client dropped: %s", exc)
        except Exception:  # one client's trouble must never end the worker
            log.exception("metrics endpoint: unexpected error serving a client")
        finally:
            self._slots.release()
            await trio.aclose_forcefully(stream)

    async def _exchange(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        try:
            request = await _read_request(stream, connection)
        except h11.RemoteProtocolError as exc:
            if connection.our_state is h11.SEND_RESPONSE or connection.our_state is h11.IDLE:
                status = exc.error_status_hint
                refusal = (status, "text/plain", b"bad request\n")
                await _send(stream, connection, refusal, head_only=False)
                await _drain(stream)
            return
        if request is None:
            return
        path = request.target.split(b"?", 1)[0].decode("ascii", "replace")
        route = self.routes.get(path)
        if request.method not in (b"GET", b"HEAD"):
            reply: Reply = (405, "text/plain", b"only GET and HEAD\n")
        elif route is None:
            reply = (404, "text/plain", ("try " + " or ".join(self.routes) + "\n").encode())
        else:
            reply = route()
        await _send(stream, connection, reply, head_only=request.method == b"HEAD")


async def _drain(stream: trio.SocketStream) -> None:
    """Read and drop what the client still sends, a little: closing on unread bytes would
    reset the connection, and the client could lose the error response we just sent."""
    await stream.send_eof()
    left = _DRAIN_BYTES
    with trio.move_on_after(_DRAIN_SECONDS):
        while left > 0 and (chunk := await stream.receive_some(min(left, 65536))):
            left -= len(chunk)


async def _read_request(
    stream: trio.SocketStream, connection: h11.Connection
) -> h11.Request | None:
    while True:
        event = connection.next_event()
        if isinstance(event, h11.Request):
            return event
        if event is h11.NEED_DATA:
            data = await stream.receive_some(4096)
            connection.receive_data(data)  # b"" is the end: the next event says so
            continue
        return None  # ConnectionClosed, or a client that went away before a request


async def _send(
    stream: trio.SocketStream, connection: h11.Connection, reply: Reply, *, head_only: bool
) -> None:
    status, content_type, body = reply
    headers = [
        ("content-type", content_type),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        ("connection", "close"),
    ]
    reason = HTTPStatus(status).phrase.encode() if status in _KNOWN_STATUSES else b""
    response = h11.Response(status_code=status, headers=headers, reason=reason)
    data = connection.send(response) or b""
    if not head_only:
        data += connection.send(h11.Data(data=body)) or b""
    data += connection.send(h11.EndOfMessage()) or b""
    await stream.send_all(data)
