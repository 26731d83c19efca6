import logging

import pytest

from patient_sidekiq.registry.hooks import Hooks
from patient_sidekiq.wire.failures import RequestError
from patient_sidekiq.wire.response import Response


def response() -> Response:
    return Response.build(
        status=200,
        headers={},
        body=None,
        duration=0.1,
        request_id="r",
        url="http://x/",
        http_method="get",
    )


def error() -> RequestError:
    return RequestError(
        class_name="OSError",
        message="refused",
        backtrace=[],
        error_type="connection",
        duration=0.1,
        request_id="r",
        url="http://x/",
        http_method="get",
    )


async def test_hooks_run_in_registration_order_sync_and_async() -> None:
    hooks = Hooks()
    seen: list[str] = []

    @hooks.after_completion
    def first(value: Response) -> None:
        seen.append(f"sync {value.status}")

    @hooks.after_completion
    async def second(value: Response) -> None:
        seen.append(f"async {value.status}")

    hooks.after_error(lambda value: seen.append(f"error {value.error_type}"))
    await hooks.run_completion(response())
    await hooks.run_error(error())
    assert seen == ["sync 200", "async 200", "error connection"]
    assert first(response()) is None  # the decorator hands the function back unchanged


async def test_a_raising_hook_stops_the_chain_and_propagates() -> None:
    hooks = Hooks()
    seen: list[str] = []

    @hooks.after_error
    def boom(value: RequestError) -> None:
        raise RuntimeError("hook failed")

    hooks.after_error(lambda value: seen.append("later"))
    with pytest.raises(RuntimeError, match="hook failed"):
        await hooks.run_error(error())
    assert seen == []


async def test_retries_exhausted_failures_are_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()
    seen: list[str] = []

    @hooks.on_retries_exhausted
    def boom(value: RequestError) -> None:
        raise RuntimeError("alerting is down")

    hooks.on_retries_exhausted(lambda value: seen.append(value.message))
    with caplog.at_level(logging.ERROR):
        await hooks.run_retries_exhausted(error())
    assert seen == ["refused"]
    assert "on_retries_exhausted hook" in caplog.text


async def test_the_context_names_the_running_hook_and_is_cleared_after_them() -> None:
    hooks = Hooks()
    named: list[str] = []

    @hooks.after_completion
    def check(value: Response) -> None:
        named.append(context["hook"])

    context = {"callback": "A::B"}
    await hooks.run_completion(response(), context=context)
    assert named == [f"after_completion:{__name__}.{check.__qualname__}"]
    assert context == {"callback": "A::B"}  # every hook passed: a later failure is not theirs

    @hooks.after_error
    def broken(value: RequestError) -> None:
        raise ValueError("nope")

    with pytest.raises(ValueError, match="nope"):
        await hooks.run_error(error(), context=context)
    assert context["hook"] == f"after_error:{__name__}.{broken.__qualname__}"


async def test_a_failing_exhausted_hook_is_logged_at_error_with_the_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = Hooks()

    @hooks.on_retries_exhausted
    def page(value: RequestError) -> None:
        raise ConnectionError("pager down")

    with caplog.at_level(logging.ERROR):
        await hooks.run_retries_exhausted(error(), context={"jid": "j1", "request_id": "r"})
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], ConnectionError)
    assert record.getMessage() == (
        f"on_retries_exhausted hook {__name__}.{page.__qualname__} failed jid=j1 request_id=r: "
        "ConnectionError: pager down"
    )
