"""Test modes: inline runs requests with the real HTTP engine; fake collects the jobs.

The Client here points at a port nobody listens on: a test mode must never touch Redis.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from patient_sidekiq import testing
from patient_sidekiq.client import module_api
from patient_sidekiq.client.async_client import AsyncClient
from patient_sidekiq.client.enqueue import Client
from patient_sidekiq.client.templates import RequestTemplate
from patient_sidekiq.errors import InlineNotPossibleError, UnknownCallbackError
from patient_sidekiq.http.settings import HttpSettings
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.hooks import Hooks
from patient_sidekiq.wire.failures import ClientError, RequestError
from patient_sidekiq.wire.response import Response
from tests.support.http import Server
from tests.support.programs import free_port

seen: list[tuple[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    """/json answers JSON naming the path and x-request-id; anything else is a 404."""

    def do_GET(self) -> None:
        if self.path.startswith("/json"):
            body = json.dumps(
                {"path": self.path, "request_id": self.headers["x-request-id"]}
            ).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
        else:
            body = b"missing"
            self.send_response(404)
            self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def server_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class SyncCallback:
    """Records what it receives."""

    def on_complete(self, response: Response) -> None:
        seen.append(("complete", response))

    def on_error(self, error: Any) -> None:
        seen.append(("error", error))


class AsyncCallback:
    """An async callback that enqueues a follow-up through the default client."""

    async def on_complete(self, response: Response) -> None:
        seen.append(("async complete", response))

    async def on_error(self, error: Any) -> None:
        seen.append(("async error", error))


class Raising:
    """A callback that fails."""

    def on_complete(self, response: Response) -> None:
        raise LookupError("callback failed")

    def on_error(self, error: Any) -> None:
        raise LookupError("callback failed")


@pytest.fixture
def registry() -> Iterator[CallbackRegistry]:
    callbacks = CallbackRegistry()
    callbacks.register(SyncCallback, "Tests::SyncCallback")
    callbacks.register(AsyncCallback)
    callbacks.register(Raising)
    seen.clear()
    yield callbacks
    seen.clear()
    testing.disable()


@pytest.fixture
def client(registry: CallbackRegistry) -> Iterator[Client]:
    with Client(f"redis://127.0.0.1:{free_port()}/0", registry=registry) as nowhere:
        yield nowhere


def test_inline_runs_the_request_and_the_callback_before_returning(
    client: Client, server_url: str
) -> None:
    with testing.inline():
        request_id = client.get(
            f"{server_url}/json?x=1", callback=SyncCallback, callback_args={"user": 7}
        )
    ((kind, response),) = seen
    assert kind == "complete"
    assert isinstance(response, Response)
    assert response.status == 200
    assert response.json() == {"path": "/json?x=1", "request_id": request_id}
    assert response.request_id == request_id
    assert response.callback_args["user"] == 7
    assert response.http_method == "get"


def test_inline_error_results_reach_on_error(client: Client, server_url: str) -> None:
    refused = f"http://127.0.0.1:{free_port()}/"
    with testing.inline(http=HttpSettings(request_timeout=5, retries=0)):
        client.get(refused, callback="Tests::SyncCallback")
        client.get(f"{server_url}/missing", callback=SyncCallback, raise_error_responses=True)
        client.get(f"{server_url}/missing", callback=SyncCallback)
    (k1, refused_error), (k2, http_error), (k3, not_raised) = seen
    assert (k1, k2, k3) == ("error", "error", "complete")
    assert isinstance(refused_error, RequestError)
    assert refused_error.error_type == "connection"
    assert isinstance(http_error, ClientError)
    assert http_error.status == 404
    assert http_error.response.body == "missing"
    assert not_raised.status == 404


def test_inline_settings_give_the_raise_error_responses_default(
    client: Client, server_url: str
) -> None:
    with testing.inline(http=HttpSettings(raise_error_responses=True)):
        client.get(f"{server_url}/missing", callback=SyncCallback)  # None: the setting decides
    assert isinstance(seen[0][1], ClientError)


def test_hooks_run_before_the_callback(client: Client, server_url: str) -> None:
    hooks = Hooks()
    hooks.after_completion(lambda response: seen.append(("hook", response.status)))

    @hooks.after_error
    async def on_error(error: Any) -> None:
        seen.append(("error hook", type(error).__name__))

    with testing.inline(hooks=hooks):
        client.get(f"{server_url}/json", callback=SyncCallback)
        client.get(f"{server_url}/nope", callback=AsyncCallback, raise_error_responses=True)
    assert [entry[0] for entry in seen] == ["hook", "complete", "error hook", "async error"]
    assert seen[0] == ("hook", 200)
    assert seen[2] == ("error hook", "ClientError")


def test_callback_exceptions_propagate(client: Client, server_url: str) -> None:
    with testing.inline(), pytest.raises(LookupError, match="callback failed"):
        client.get(f"{server_url}/json", callback=Raising)


def test_ruby_callbacks_cannot_run_inline(client: Client, server_url: str) -> None:
    with testing.inline(), pytest.raises(UnknownCallbackError, match="Billing::Invoice"):
        client.get(f"{server_url}/json", callback="Billing::Invoice")


def test_module_level_functions_and_templates_run_inline(
    registry: CallbackRegistry, server_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(module_api, "_default", None)
    module_api.configure(redis_url=f"redis://127.0.0.1:{free_port()}/0", registry=registry)
    template = RequestTemplate(f"{server_url}/json/")
    with testing.inline():
        module_api.get(f"{server_url}/json", callback=SyncCallback)
        module_api.execute(template.get("users/1"), callback=SyncCallback)
    assert [entry[1].json()["path"] for entry in seen] == ["/json", "/json/users/1"]
    module_api.default_client().close()
    monkeypatch.setattr(module_api, "_default", None)


def test_inline_mode_and_disable(client: Client, server_url: str) -> None:
    mode = testing.inline_mode()
    assert testing.current_mode() is mode
    client.get(f"{server_url}/json", callback=SyncCallback)
    testing.disable()
    assert testing.current_mode() is None
    assert len(seen) == 1


def test_fake_collects_jobs_and_drain_runs_them(client: Client, server_url: str) -> None:
    with testing.fake() as fake:
        first = client.get(f"{server_url}/json/1", callback=SyncCallback)
        client.get(f"{server_url}/json/2", callback=SyncCallback, callback_args={"n": 2})
        assert seen == []
        assert fake.jobs[0].args[4] == first
        assert [job.args[0]["url"] for job in fake.jobs] == [
            f"{server_url}/json/1",
            f"{server_url}/json/2",
        ]
        fake.drain()
        assert fake.jobs == []
    assert [entry[1].json()["path"] for entry in seen] == ["/json/1", "/json/2"]
    fake.clear()


def test_sync_inline_inside_trio_is_refused_clearly(client: Client, server_url: str) -> None:
    import trio

    async def inside() -> None:
        with testing.inline():
            client.get(f"{server_url}/json", callback=SyncCallback)

    with pytest.raises(InlineNotPossibleError, match="AsyncClient"):
        trio.run(inside)


async def test_async_client_runs_inline_in_the_current_trio_run(
    registry: CallbackRegistry, http_server: Server
) -> None:
    async with RedisBridge(f"redis://127.0.0.1:{free_port()}/0") as bridge:
        client = AsyncClient(bridge, registry=registry)
        with testing.inline():
            await client.get(http_server.url("/echo"), callback=AsyncCallback)
        with testing.fake() as fake:
            await client.get(http_server.url("/status/500"), callback=AsyncCallback)
            await fake.drain_async()
    assert [(kind, result.status) for kind, result in seen] == [
        ("async complete", 200),
        ("async complete", 500),
    ]
