"""The same gem-enqueued requests through the real gem's processor and through ours.

For every group of ``scenarios.py``: the CallbackWorker jobs and what the real Ruby callback
recorded must be identical request by request, and so must the Redis state both processors
leave (queues, retry, dead, ``stat:*``, the gem's totals without durations, in-flight keys,
stored payloads). ``DIFFERENTIAL_DUMP=DIR`` writes both sides of each group to
``DIR/<group>.json`` for reading.

The servers of the external payload stores (moto for S3, PostgreSQL) are the session
fixtures of ``tests/support/s3.py`` and ``tests/support/postgres.py``, started only when a
selected group's store needs them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.differential import scenarios
from tests.differential.aux_servers import aux_servers
from tests.differential.harness import DifferentialRun, Group, http_test_server
from tests.differential.normalize import differences, record, state
from tests.support.oracle import require_oracle

pytestmark = [pytest.mark.interop, pytest.mark.differential]
pytest_plugins = ["tests.support.s3", "tests.support.postgres"]

# The URL of each server a payload store may need (ExternalStore.servers), from its fixture.
STORE_SERVERS = {
    "s3": lambda request: request.getfixturevalue("s3_server").url,
    "postgres": lambda request: request.getfixturevalue("postgres_server").url(),
}


@pytest.fixture(scope="module")
def urls() -> Iterator[dict[str, str]]:
    """Base URLs of the oracle's HTTP test server and of the auxiliary servers."""
    oracle = require_oracle()
    with http_test_server(oracle) as base, aux_servers() as aux:
        yield {
            "base": base,
            "redirector": aux.redirector,
            "tls": aux.untrusted_tls,
            "h2": aux.h2,
            "ca_file": aux.ca_file,
            "blackhole": aux.blackhole,
        }


GROUP_NAMES = [group.name for group in scenarios.groups({})]


def _group(name: str, urls: dict[str, str]) -> Group:
    return next(group for group in scenarios.groups(urls) if group.name == name)


def _store_servers(name: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The URLs of the servers group ``name``'s payload store needs (starting them)."""
    store = _group(name, {}).store
    return {server: STORE_SERVERS[server](request) for server in (store.servers if store else ())}


@pytest.mark.parametrize("group_name", GROUP_NAMES)
def test_same_results_as_the_real_gem(
    group_name: str, urls: dict[str, str], request: pytest.FixtureRequest
) -> None:
    """Each request's callback and the Redis state match the real gem's, field by field."""
    oracle = require_oracle()
    group = _group(group_name, {**urls, **_store_servers(group_name, request)})
    only = os.environ.get("DIFFERENTIAL_ONLY")  # comma-separated request names, to iterate
    if only:
        kept = tuple(r for r in group.requests if r["name"] in only.split(","))
        if not kept:
            pytest.skip("DIFFERENTIAL_ONLY selects none of this group's requests")
        group = dataclasses.replace(group, requests=kept)
    with tempfile.TemporaryDirectory(prefix="differential-") as directory:
        enqueued, gem, ours = DifferentialRun(oracle, group, Path(directory)).run()

    found: list[str] = []
    dump: dict[str, Any] = {"records": {}, "state": {}}
    deviations = {r["name"]: r["deviation"] for r in group.requests if "deviation" in r}
    for entry in enqueued:
        name, request_id = entry["name"], entry["request_id"]
        if name in deviations:
            # A deliberate deviation (ARCHITECTURE.md): shown in the dump, not compared.
            dump["records"][name] = {"deviation": deviations[name]}
            continue
        left = [record(r) for r in gem.records.get(request_id, [])]
        right = [record(r) for r in ours.records.get(request_id, [])]
        dump["records"][name] = {"gem": left, "ours": right}
        found += [f"{name}: {line}" for line in differences(left, right)]
    dump["state"] = {"gem": state(gem), "ours": state(ours)}
    if len(deviations) == len(group.requests):
        # A group of deliberate deviations: the gem loses these results (and so leaves
        # other counters); ours must deliver every one exactly once: to the callback, or,
        # when the Ruby callback itself raised on it, into Sidekiq's retry set.
        retried = [
            job["args"][0].get("request_id")
            for job in ours.retry
            if job.get("class") == "PatientHttp::Sidekiq::CallbackWorker"
            and isinstance(job.get("args"), list)
            and isinstance(job["args"][0], dict)
        ]
        for entry in enqueued:
            delivered = len(ours.records.get(entry["request_id"], []))
            delivered += retried.count(entry["request_id"])
            assert delivered == 1, entry["name"]
            assert not gem.records.get(entry["request_id"]), f"the gem delivers {entry['name']}"
    else:
        found += [f"redis state: {line}" for line in differences(state(gem), state(ours))]

    # Sidekiq 7's Metrics tab: we flush at every beat and when stopping, so every job we ran
    # is there (the gem's side flushes on its beat only, so it may not have them yet).
    processed = ours.metrics.get("PatientHttp::Sidekiq::RequestWorker|p", 0)
    if processed != len(enqueued):
        found.append(f"metrics: {processed} RequestWorker executions for {len(enqueued)} jobs")

    target = os.environ.get("DIFFERENTIAL_DUMP")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        Path(target, f"{group_name}.json").write_text(json.dumps(dump, indent=1, sort_keys=True))
    assert not found, f"{len(found)} differences from the real gem:\n" + "\n".join(found)
