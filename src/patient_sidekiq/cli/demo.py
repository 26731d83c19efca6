"""``patient-sidekiq demo``: a worker, a slow local API and a few hundred requests, live.

The demo proves the whole path on the operator's own Redis within a minute: it starts a tiny
HTTP/1.1 server on 127.0.0.1 that answers after 50-500 ms (a stand-in for a slow API), runs a
worker in this process on demo-only queues (so it never touches the app's ``patient_http`` or
``default`` jobs), enqueues requests through the Python client API with a Python callback,
and draws progress until every callback has run.

Redis keys: the worker's (see ARCHITECTURE.md) under the queues ``patient_http_demo`` and
``patient_http_demo_callbacks``; the in-flight and totals keys are the shared gem keys, so the
demo's requests show up in ``patient-sidekiq status`` like any others.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final, TextIO

import h11
import trio

from patient_sidekiq.client.async_client import AsyncClient
from patient_sidekiq.config.model import Config
from patient_sidekiq.redis_io.redis_bridge import RedisBridge
from patient_sidekiq.registry.callbacks import CallbackRegistry
from patient_sidekiq.registry.hooks import Hooks
from patient_sidekiq.wire.failures import HttpError, RedirectError, RequestError
from patient_sidekiq.wire.response import Response
from patient_sidekiq.worker.runner import Runner

__all__ = ["DEMO_CALLBACK", "DEMO_QUEUE", "run_demo"]

DEMO_QUEUE: Final = "patient_http_demo"
DEMO_CALLBACK_QUEUE: Final = "patient_http_demo_callbacks"
DEMO_CALLBACK: Final = "PatientSidekiq::DemoCallback"


@dataclass
class _Tally:
    """What the demo callback has seen (shared by every callback instance)."""

    completed: int = 0
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    expected: int = 0

    def record(self, status: int | None) -> None:
        if status is None:
            self.errors += 1
        else:
            self.completed += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
        if self.completed + self.errors >= self.expected:
            self.done.set()


def _callback_class(tally: _Tally) -> type:
    class DemoCallback:
        """Counts results; async, so it runs on the worker's loop."""

        async def on_complete(self, response: Response) -> None:
            tally.record(response.status)

        async def on_error(self, error: RequestError | HttpError | RedirectError) -> None:
            tally.record(None)

    return DemoCallback


async def _serve_one(stream: trio.SocketStream) -> None:
    connection = h11.Connection(h11.SERVER)
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            data = await stream.receive_some(65536)
            connection.receive_data(data)  # b"" tells h11 the peer closed
            continue
        if isinstance(event, h11.Request):
            # A slow API: answers take 50-500 ms.
            await trio.sleep(random.uniform(0.05, 0.5))
            body = json.dumps({"path": event.target.decode(), "answer": 42}).encode()
            headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
            for message in (
                h11.Response(status_code=200, headers=headers),
                h11.Data(data=body),
                h11.EndOfMessage(),
            ):
                await stream.send_all(connection.send(message) or b"")
        elif isinstance(event, h11.ConnectionClosed):
            return
        if connection.our_state is h11.DONE and connection.their_state is h11.DONE:
            connection.start_next_cycle()
        elif connection.their_state is h11.CLOSED or connection.our_state is h11.CLOSED:
            return


async def _serve_api(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(_serve_one_safely, listeners)


async def _serve_one_safely(stream: trio.SocketStream) -> None:
    try:
        await _serve_one(stream)
    except (trio.BrokenResourceError, h11.ProtocolError):
        pass
    finally:
        await stream.aclose()


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(total, 1)
    return "#" * filled + "-" * (width - filled)


async def run_demo(config: Config, *, requests: int = 300, out: TextIO = sys.stdout) -> bool:
    """Run the demo against ``config``'s Redis; return whether every callback ran.

    Raises :class:`~patient_sidekiq.errors.RedisUnavailableError` when Redis does not answer
    (the worker alone would keep retrying, and the demo would wait for nothing).
    """
    async with RedisBridge(config.redis_target(), name="patient-sidekiq-demo") as bridge:
        await bridge.execute("PING")
    tally = _Tally(expected=requests)
    if requests <= 0:
        tally.done.set()  # nothing to wait for
    registry = CallbackRegistry()
    registry.register(_callback_class(tally), DEMO_CALLBACK)
    demo_config = config.replace(
        queues=((DEMO_QUEUE, 0),),
        python_callback_queue=DEMO_CALLBACK_QUEUE,
        max_connections=max(requests, 16),
        heartbeat_interval=min(config.heartbeat_interval, 10.0),
        orphan_threshold=max(min(config.orphan_threshold, 60.0), 30.0),
    )
    runner = Runner(demo_config, registry=registry, hooks=Hooks(), handle_os_signals=False)
    interactive = out.isatty()
    async with trio.open_nursery() as outer:
        port = await outer.start(_serve_api)
        async with trio.open_nursery() as worker:
            await worker.start(runner.run)
            started = time.monotonic()
            await _enqueue(demo_config, registry, port, requests)
            out.write(f"enqueued {requests} requests to http://127.0.0.1:{port}/items/...\n")
            with trio.move_on_after(120):
                while not tally.done.is_set():
                    with trio.move_on_after(0.25):
                        await tally.done.wait()
                    _draw(out, tally, requests, runner, time.monotonic() - started, interactive)
            out.write("\n")
            runner.stop()
        outer.cancel_scope.cancel()  # the API server never ends on its own
    ok = tally.done.is_set()
    command = _command_name()
    out.write(
        ("All callbacks ran." if ok else "Not every callback ran within 120 s.")
        + "\nWhere to look next:\n"
        f"  {command + ' status':<30} processes, in-flight, capacity, totals, queues\n"
        f"  {command + ' inflight':<30} requests in flight right now, oldest first\n"
        f"  {'README.md':<30} connect a Ruby app, write Python callbacks\n"
    )
    return ok


def _command_name() -> str:
    """How the user can type this command again: a venv's script is rarely on PATH."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) != "patient-sidekiq":
        return "patient-sidekiq"
    found = shutil.which("patient-sidekiq")
    if found and os.path.realpath(found) == os.path.realpath(script):
        return "patient-sidekiq"
    relative = os.path.relpath(script)
    return relative if not relative.startswith("..") else os.path.abspath(script)


async def _enqueue(config: Config, registry: CallbackRegistry, port: int, requests: int) -> None:
    async with RedisBridge(config.redis_target(), name="patient-sidekiq-demo") as bridge:
        client = AsyncClient(
            bridge, queue=DEMO_QUEUE, payloads=config.payload_settings(bridge), registry=registry
        )
        for number in range(requests):
            await client.get(
                f"http://127.0.0.1:{port}/items/{number}",
                callback=DEMO_CALLBACK,
                callback_args={"number": number},
            )


def _draw(
    out: TextIO, tally: _Tally, total: int, runner: Runner, elapsed: float, live: bool
) -> None:
    finished = tally.completed + tally.errors
    worker = runner.request_worker
    in_flight = worker.in_flight if worker is not None else 0
    rate = finished / elapsed if elapsed > 0 else 0.0
    line = (
        f"[{_bar(finished, total)}] {finished}/{total} done  {rate:6.1f} req/s  "
        f"in flight {in_flight:4d}  errors {tally.errors}"
    )
    out.write(("\r" + line) if live else (line + "\n"))
    out.flush()
