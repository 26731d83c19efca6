"""The Ruby class name and message the gem reports for each way an HTTP request can fail.

A Ruby callback reads ``error.error_class``, which is ``const_get`` of the ``class_name`` we
write: a Python name there raises ``NameError`` in the Ruby app. So every failure is named
here as the real gem (patient_http 1.3.0 on async-http 0.59 / Ruby 3.1) names it, with
Ruby's wording for the message, and only with constants that exist wherever the gem is
loaded: Ruby core (``Errno::*``, ``SocketError``, ``EOFError``, ``IOError``,
``ArgumentError``, ``RuntimeError`` …), ``OpenSSL::SSL::SSLError``, ``Zlib::DataError``,
``Protocol::HTTP1::BadResponse``, ``Async::TimeoutError`` and ``PatientHttp::*``; our own
exceptions name theirs in ``ruby_class_name``. An exception raised by Python code (a
preprocessor) gets the Ruby class of the same meaning (``KeyError``, ``ValueError`` →
``ArgumentError`` …), else ``RuntimeError``.
:data:`RUBY_CLASS_NAMES` lists every name this module can produce; a
test resolves each one with ``const_get`` in real Ruby, and ``tests/differential`` compares
the messages with the real gem's.

Touches no Redis keys.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
import socket
import ssl
import zlib
from collections.abc import Iterator
from typing import Final
from urllib.parse import urlsplit

import h11
import httpx
import trio

from patient_sidekiq.errors import PatientSidekiqError, ResponseTooLargeError

TIMEOUT: Final = "Async::TimeoutError"
TOO_LARGE: Final = "PatientHttp::ResponseTooLargeError"
SSL_ERROR: Final = "OpenSSL::SSL::SSLError"
DNS_ERROR: Final = "SocketError"
EOF_ERROR: Final = "EOFError"
IO_ERROR: Final = "IOError"
UNKNOWN: Final = "RuntimeError"
PROTOCOL_ERROR: Final = "Protocol::HTTP1::BadResponse"
ZLIB_ERROR: Final = "Zlib::DataError"

# The errno names Ruby defines under Errno:: that a socket can raise here.
_ERRNO_NAMES: Final = frozenset(
    {
        "ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EPIPE", "ETIMEDOUT", "EHOSTUNREACH",
        "ENETUNREACH", "ENETDOWN", "EHOSTDOWN", "EADDRNOTAVAIL", "EADDRINUSE", "EACCES",
        "EPERM", "ENOBUFS", "ENOMEM", "EMFILE", "ENFILE", "EINVAL", "EAFNOSUPPORT", "EPROTO",
        "ENOTCONN", "ESHUTDOWN", "EBADF", "EIO", "EAGAIN", "EINTR",
    }
)  # fmt: skip


EXECUTION_EXPIRED: Final = "execution expired"


def ruby_error(exc: BaseException, url: str) -> tuple[str, str]:
    """``(class_name, message)`` the gem writes for ``exc``, raised requesting ``url``."""
    chain = list(_chain(exc))
    too_large = [link for link in chain if isinstance(link, ResponseTooLargeError)]
    if too_large:
        return TOO_LARGE, str(too_large[0])
    for link in chain:
        named = getattr(type(link), "ruby_class_name", None)
        if isinstance(link, PatientSidekiqError) and isinstance(named, str):
            return named, str(link)
    if any(isinstance(link, _TIMEOUTS) for link in chain):
        # The gem runs each request inside Async's with_timeout: connect, write, read and
        # the body all end in the same Async::TimeoutError.
        return TIMEOUT, EXECUTION_EXPIRED
    for link in chain:
        if isinstance(link, ssl.SSLError | ssl.CertificateError):
            return SSL_ERROR, _ssl_message(link, url)
    for leaf in _leaves(chain):
        if isinstance(leaf, socket.gaierror):
            return DNS_ERROR, f"getaddrinfo: {_gai_text(leaf)}"
    number = _system_errno(chain)
    if number is not None:
        name = errno.errorcode.get(number, "")
        text = os.strerror(number)
        if any(isinstance(link, httpx.ConnectError) for link in chain):
            text = f"{text} - connect(2) for {_connected_address(chain) or _peer(url)}"
        return (f"Errno::{name}" if name in _ERRNO_NAMES else IO_ERROR), text
    for link in chain:
        if isinstance(link, zlib.error):
            # "Error -3 while decompressing data: incorrect header check" -> zlib's own text
            return ZLIB_ERROR, str(link).rsplit(": ", 1)[-1]
    for link in chain:
        if isinstance(link, httpx.RemoteProtocolError | h11.RemoteProtocolError):
            return _protocol_error(str(link))
    for link in chain:
        if isinstance(link, httpx.UnsupportedProtocol | httpx.LocalProtocolError):
            # a URL or header the client cannot send: Ruby's clients raise ArgumentError
            return "ArgumentError", str(link) or "ArgumentError"
    if any(isinstance(link, _IO_ERRORS) for link in chain):
        return IO_ERROR, _first_text(chain) or "stream closed"
    # Anything else came from code (a preprocessor, say): the Ruby class of the same
    # meaning, else RuntimeError, what a bare `raise "…"` is in Ruby.
    for cls in type(exc).__mro__:
        if cls in _BUILTIN_NAMES:
            return _BUILTIN_NAMES[cls], _first_text(chain) or _BUILTIN_NAMES[cls]
    return UNKNOWN, _first_text(chain) or UNKNOWN


_BUILTIN_NAMES: Final[dict[type[BaseException], str]] = {
    KeyError: "KeyError",
    IndexError: "IndexError",
    TypeError: "TypeError",
    ValueError: "ArgumentError",
    ZeroDivisionError: "ZeroDivisionError",
    NotImplementedError: "NotImplementedError",
    AttributeError: "NoMethodError",
    NameError: "NameError",
    RecursionError: "SystemStackError",
    StopIteration: "StopIteration",
    UnicodeError: "EncodingError",
    LookupError: "IndexError",
    ArithmeticError: "FloatDomainError",
}


_TIMEOUTS: Final = (trio.TooSlowError, httpx.TimeoutException, TimeoutError)
_IO_ERRORS: Final = (
    httpx.TransportError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    OSError,
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and not any(current is s for s in seen):
        seen.append(current)
        yield current
        current = current.__cause__ or current.__context__


def _leaves(chain: list[BaseException]) -> Iterator[BaseException]:
    for link in chain:
        if isinstance(link, BaseExceptionGroup):
            for inner in link.exceptions:
                yield from _leaves(list(_chain(inner)))
        else:
            yield link


def _system_errno(chain: list[BaseException]) -> int | None:
    """The errno behind the failure when exactly one is found (one per address tried)."""
    found = {
        leaf.errno
        for leaf in _leaves(chain)
        if isinstance(leaf, OSError) and not isinstance(leaf, ssl.SSLError) and leaf.errno
    }
    return found.pop() if len(found) == 1 else None


_SOCKADDR: Final = re.compile(r"Error connecting to \('([^']+)', (\d+)")


def _connected_address(chain: list[BaseException]) -> str | None:
    """The address of the last connect attempt (trio names each one), as Ruby prints it:
    the resolved address, ``127.0.0.1:1`` for ``localhost:1``, ``[::1]:1`` for IPv6."""
    found = None
    for leaf in _leaves(chain):
        match = _SOCKADDR.search(str(leaf))
        if match:
            host, port = match.groups()
            found = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return found


def _gai_text(exc: socket.gaierror) -> str:
    # Ruby's SocketError reads "getaddrinfo: " + gai_strerror(3), as Python's second arg.
    if len(exc.args) >= 2 and isinstance(exc.args[1], str):
        return exc.args[1]
    return str(exc)


def _peer(url: str) -> str:
    """``host:port`` as Ruby prints the address in ``connect(2) for …`` (``[v6]:port``)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def _ssl_message(exc: ssl.SSLError | ssl.CertificateError, url: str) -> str:
    """Ruby's OpenSSL wording: ``SSL_connect returned=1 errno=0 peeraddr=… state=error: …``."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message or "certificate verify failed")
        # Python appends ", certificate is not valid for 'host'." to OpenSSL's own text.
        reason = reason.split(", certificate is not valid")[0]
        detail = f"certificate verify failed ({reason})"
    elif isinstance(exc, ssl.SSLError):
        text = exc.strerror or str(exc)
        # "[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)" -> OpenSSL's text
        detail = text.split("] ", 1)[-1].split(" (_ssl.c", 1)[0]
        if isinstance(exc, ssl.SSLEOFError) or "EOF occurred" in detail:
            detail = "unexpected eof while reading"
        # Ruby names the peer only once the handshake got as far as checking certificates.
        return f"SSL_connect returned=1 errno=0 peeraddr=(null) state=error: {detail}"
    else:
        detail = str(exc)
    return f"SSL_connect returned=1 errno=0 peeraddr={_peer(url)} state=error: {detail}"


def ruby_error_type(class_name: str) -> str:
    """The gem's ``error_type`` for a failure of Ruby class ``class_name``."""
    return _ERROR_TYPES.get(class_name, "unknown")


_ERROR_TYPES: Final = {
    TIMEOUT: "timeout",
    SSL_ERROR: "ssl",
    TOO_LARGE: "response_too_large",
    DNS_ERROR: "connection",
    IO_ERROR: "connection",
    EOF_ERROR: "connection",  # an IOError in Ruby
    **{
        f"Errno::{name}": "connection"
        for name in ("ECONNREFUSED", "ECONNRESET", "ECONNABORTED", "EHOSTUNREACH", "ETIMEDOUT")
    },
    "Errno::EPIPE": "connection",
}


def _protocol_error(text: str) -> tuple[str, str]:
    """What Ruby's HTTP/1 client raises where h11 reports a broken exchange."""
    lowered = text.lower()
    if "connectionclosed" in lowered and "send_response" in lowered:
        # h11 saw the server close while it owed us a response
        return EOF_ERROR, "Could not read line!"
    if "without sending a response" in lowered:
        # async-http's read_line on a connection closed before the status line
        return EOF_ERROR, "Could not read line!"
    short = re.search(r"received (\d+) bytes, expected (\d+)", lowered)
    if short:
        # protocol-http1's fixed-length body reader
        remaining = int(short.group(2)) - int(short.group(1))
        return EOF_ERROR, f"Stream closed with {remaining} bytes remaining!"
    if "before the body ended" in lowered or "complete message body" in lowered:
        # protocol-http1's body readers: a bare `raise EOFError` (its message is the name)
        return EOF_ERROR, "EOFError"
    return PROTOCOL_ERROR, text


def _first_text(chain: list[BaseException]) -> str:
    return next((str(link) for link in chain if str(link)), "")


RUBY_CLASS_NAMES: Final = frozenset(
    {TIMEOUT, TOO_LARGE, SSL_ERROR, DNS_ERROR, EOF_ERROR, IO_ERROR, UNKNOWN, PROTOCOL_ERROR}
    | {ZLIB_ERROR}
    | set(_BUILTIN_NAMES.values())
    | {"ArgumentError"}
    | {f"Errno::{name}" for name in _ERRNO_NAMES}
)
"""Every ``class_name`` :func:`ruby_error` can return (resolved in Ruby by a test)."""
