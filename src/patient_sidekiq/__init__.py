"""patient-sidekiq: a Python worker for patient_http-sidekiq jobs, speaking Sidekiq's protocol.

The names an application uses are here (the README documents them, tests/test_public_api.py
pins them); the machinery is one level down, in :mod:`patient_sidekiq.worker` (running a
worker yourself) and :mod:`patient_sidekiq.wire` (the gem's data), as trio keeps
``trio.lowlevel`` apart. Every exception is in :mod:`patient_sidekiq.errors`; test modes in
:mod:`patient_sidekiq.testing`. Names load at first use.

"wire spec §N" in the code is section N of ``docs/patient-http-wire.md`` (the gem's wire
format), "protocol spec §N" of ``docs/sidekiq-protocol.md`` (Sidekiq's protocol).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from patient_sidekiq._version import __version__ as __version__

if TYPE_CHECKING:
    from patient_sidekiq.client.async_client import AsyncClient as AsyncClient
    from patient_sidekiq.client.builder import FileStore as FileStore
    from patient_sidekiq.client.builder import RedisStore as RedisStore
    from patient_sidekiq.client.builder import S3Store as S3Store
    from patient_sidekiq.client.builder import SqlStore as SqlStore
    from patient_sidekiq.client.enqueue import Client as Client
    from patient_sidekiq.client.module_api import configure as configure
    from patient_sidekiq.client.module_api import delete as delete
    from patient_sidekiq.client.module_api import execute as execute
    from patient_sidekiq.client.module_api import get as get
    from patient_sidekiq.client.module_api import patch as patch
    from patient_sidekiq.client.module_api import post as post
    from patient_sidekiq.client.module_api import put as put
    from patient_sidekiq.client.templates import RequestTemplate as RequestTemplate
    from patient_sidekiq.config.loader import load_config as load_config
    from patient_sidekiq.config.model import Config as Config
    from patient_sidekiq.errors import ConfigurationError as ConfigurationError
    from patient_sidekiq.errors import PatientSidekiqError as PatientSidekiqError
    from patient_sidekiq.http.settings import OutgoingRequest as OutgoingRequest
    from patient_sidekiq.registry.callbacks import callback as callback
    from patient_sidekiq.registry.encryption_hooks import register_decryption as register_decryption
    from patient_sidekiq.registry.encryption_hooks import register_encryption as register_encryption
    from patient_sidekiq.registry.hooks import after_completion as after_completion
    from patient_sidekiq.registry.hooks import after_error as after_error
    from patient_sidekiq.registry.hooks import default_hooks as default_hooks
    from patient_sidekiq.registry.hooks import on_retries_exhausted as on_retries_exhausted
    from patient_sidekiq.registry.registrations import (
        register_preprocessor as register_preprocessor,
    )
    from patient_sidekiq.registry.registrations import register_secret as register_secret
    from patient_sidekiq.wire.callback_args import CallbackArgs as CallbackArgs
    from patient_sidekiq.wire.failures import ClientError as ClientError
    from patient_sidekiq.wire.failures import HttpError as HttpError
    from patient_sidekiq.wire.failures import RecursiveRedirectError as RecursiveRedirectError
    from patient_sidekiq.wire.failures import RedirectError as RedirectError
    from patient_sidekiq.wire.failures import RequestError as RequestError
    from patient_sidekiq.wire.failures import ServerError as ServerError
    from patient_sidekiq.wire.failures import TooManyRedirectsError as TooManyRedirectsError
    from patient_sidekiq.wire.headers import SecretRef as SecretRef
    from patient_sidekiq.wire.request import Request as Request
    from patient_sidekiq.wire.response import Response as Response

# name -> module, imported at first use: `import patient_sidekiq` (or the CLI) loads
# only what is asked for.
_EXPORTS: dict[str, str] = {
    "Client": "patient_sidekiq.client.enqueue",
    "AsyncClient": "patient_sidekiq.client.async_client",
    "RedisStore": "patient_sidekiq.client.builder",
    "FileStore": "patient_sidekiq.client.builder",
    "S3Store": "patient_sidekiq.client.builder",
    "SqlStore": "patient_sidekiq.client.builder",
    "RequestTemplate": "patient_sidekiq.client.templates",
    "Request": "patient_sidekiq.wire.request",
    "SecretRef": "patient_sidekiq.wire.headers",
    "configure": "patient_sidekiq.client.module_api",
    "get": "patient_sidekiq.client.module_api",
    "post": "patient_sidekiq.client.module_api",
    "put": "patient_sidekiq.client.module_api",
    "patch": "patient_sidekiq.client.module_api",
    "delete": "patient_sidekiq.client.module_api",
    "execute": "patient_sidekiq.client.module_api",
    "callback": "patient_sidekiq.registry.callbacks",
    "after_completion": "patient_sidekiq.registry.hooks",
    "after_error": "patient_sidekiq.registry.hooks",
    "on_retries_exhausted": "patient_sidekiq.registry.hooks",
    "default_hooks": "patient_sidekiq.registry.hooks",
    "Response": "patient_sidekiq.wire.response",
    "CallbackArgs": "patient_sidekiq.wire.callback_args",
    "RequestError": "patient_sidekiq.wire.failures",
    "HttpError": "patient_sidekiq.wire.failures",
    "ClientError": "patient_sidekiq.wire.failures",
    "ServerError": "patient_sidekiq.wire.failures",
    "RedirectError": "patient_sidekiq.wire.failures",
    "TooManyRedirectsError": "patient_sidekiq.wire.failures",
    "RecursiveRedirectError": "patient_sidekiq.wire.failures",
    "register_secret": "patient_sidekiq.registry.registrations",
    "register_preprocessor": "patient_sidekiq.registry.registrations",
    "register_encryption": "patient_sidekiq.registry.encryption_hooks",
    "register_decryption": "patient_sidekiq.registry.encryption_hooks",
    "OutgoingRequest": "patient_sidekiq.http.settings",
    "Config": "patient_sidekiq.config.model",
    "load_config": "patient_sidekiq.config.loader",
    "PatientSidekiqError": "patient_sidekiq.errors",
    "ConfigurationError": "patient_sidekiq.errors",
}

__all__ = [
    "AsyncClient",
    "CallbackArgs",
    "Client",
    "ClientError",
    "Config",
    "ConfigurationError",
    "FileStore",
    "HttpError",
    "OutgoingRequest",
    "PatientSidekiqError",
    "RecursiveRedirectError",
    "RedirectError",
    "RedisStore",
    "Request",
    "RequestError",
    "RequestTemplate",
    "Response",
    "S3Store",
    "SecretRef",
    "ServerError",
    "SqlStore",
    "TooManyRedirectsError",
    "__version__",
    "after_completion",
    "after_error",
    "callback",
    "configure",
    "default_hooks",
    "delete",
    "execute",
    "get",
    "load_config",
    "on_retries_exhausted",
    "patch",
    "post",
    "put",
    "register_decryption",
    "register_encryption",
    "register_preprocessor",
    "register_secret",
]


# Shared with patient_sidekiq.worker and patient_sidekiq.wire (their parent is always loaded
# first), so importing the package loads no module of its own for it.
def _lazy_exports(
    package: str, exports: Mapping[str, str], namespace: MutableMapping[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return the ``__getattr__`` and ``__dir__`` of ``package``.

    ``exports`` maps each name to the module defining it; ``namespace`` is the package's
    ``globals()``, where a loaded name is kept so the next access is a plain lookup.
    """

    def getattr_(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            try:
                return importlib.import_module(f"{package}.{name}")
            except ModuleNotFoundError as exc:
                if exc.name != f"{package}.{name}":
                    raise  # the submodule exists; something it imports does not
                raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(namespace.get("__all__", ())))

    return getattr_, dir_


__getattr__, __dir__ = _lazy_exports(__name__, _EXPORTS, globals())
