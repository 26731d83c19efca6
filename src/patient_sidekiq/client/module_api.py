"""The module-level client API: ``patient_sidekiq.get(url, callback=…)`` and friends.

Role: one process-wide default :class:`~patient_sidekiq.client.enqueue.Client`, as the gem has one
registered handler behind its module-level ``PatientHttp.get``/``post``/…. :func:`configure`
sets it; otherwise it is created on first use from the environment (``REDIS_URL``,
``PATIENT_HTTP_ENCRYPTION_KEY``). Every function here delegates to it, so jobs, checks and
test modes are exactly those of :class:`~patient_sidekiq.client.enqueue.Client`.

Redis keys touched: those of :meth:`Client.execute <patient_sidekiq.client.enqueue.Client.execute>`:
``queues`` (SADD), ``queue:<queue>`` (LPUSH), and ``patient_http:payloads:<uuid>`` (SET) for a
large payload in the Redis store.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from patient_sidekiq.client.enqueue import CallbackRef, Client, EnqueueOptions

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from patient_sidekiq.wire.request import Request

__all__ = [
    "configure",
    "default_client",
    "delete",
    "execute",
    "get",
    "patch",
    "post",
    "put",
    "request",
]

# The module-level API mirrors the gem's module-level ``PatientHttp.get``/``post``/…: one
# process-wide default client, like the gem's one registered handler.
_default_lock = threading.Lock()
_default: Client | None = None


def _new_client(**kwargs: Any) -> Client:
    # enqueue re-exports this module's functions, so this module imports enqueue only when
    # a client is made; a top-level import would be an import cycle.

    return Client(**kwargs)


def configure(**kwargs: Any) -> Client:
    """Create the default client (arguments as :class:`Client`) and return it.

    A previously configured default client is closed.
    """
    global _default
    client = _new_client(**kwargs)
    with _default_lock:
        previous, _default = _default, client
    if previous is not None:
        previous.close()
    return client


def default_client() -> Client:
    """Return the default client, creating it from the environment if never configured."""
    global _default
    with _default_lock:
        if _default is None:
            _default = _new_client()
        return _default


def execute(
    request: Request,
    *,
    callback: CallbackRef,
    callback_args: Mapping[str, Any] | None = None,
    raise_error_responses: bool | None = False,
) -> str:
    """Enqueue ``request`` with the default client (see :meth:`Client.execute`)."""
    return default_client().execute(
        request,
        callback=callback,
        callback_args=callback_args,
        raise_error_responses=raise_error_responses,
    )


def request(
    method: str, url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]
) -> str:
    """Build and enqueue a request with the default client (see :meth:`Client.request`)."""
    return default_client().request(method, url, callback=callback, **kwargs)


def get(url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
    """Enqueue a GET with the default client; keyword arguments as :meth:`Client.request`."""
    return default_client().request("get", url, callback=callback, **kwargs)


def post(url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
    """Enqueue a POST with the default client; keyword arguments as :meth:`Client.request`."""
    return default_client().request("post", url, callback=callback, **kwargs)


def put(url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
    """Enqueue a PUT with the default client; keyword arguments as :meth:`Client.request`."""
    return default_client().request("put", url, callback=callback, **kwargs)


def patch(url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
    """Enqueue a PATCH with the default client; keyword arguments as :meth:`Client.request`."""
    return default_client().request("patch", url, callback=callback, **kwargs)


def delete(url: str, *, callback: CallbackRef, **kwargs: Unpack[EnqueueOptions]) -> str:
    """Enqueue a DELETE with the default client; keyword arguments as :meth:`Client.request`."""
    return default_client().request("delete", url, callback=callback, **kwargs)
