"""What is compared: both sides' records and Redis state, minus what is random or timed.

Ignored, and only these: durations and timestamps (also the mtime in the header of a gzipped
body), jids of the CallbackWorker jobs (new on
each side), ciphertexts and payload-store keys (random IVs and uuids: their *form* is
compared), and the error backtrace's file paths (Ruby frames of the gem vs. ours: only
whether one exists is compared).
"""

from __future__ import annotations

import base64
import re
from typing import Any

from tests.differential.harness import SideState

TIMED = {"duration", "created_at", "enqueued_at", "failed_at", "retried_at", "jid", "bid"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def scrub(value: Any, request_id: str = "") -> Any:
    """``value`` with timed fields dropped and random parts replaced by their form."""
    if isinstance(value, dict):
        if value.get("__encrypted__") is True and isinstance(value.get("value"), str):
            return {**value, "value": "<ciphertext>"}
        if value.get("encoding") == "gzipped" and isinstance(value.get("value"), str):
            return {**value, "value": _gzip_without_mtime(value["value"])}
        out = {}
        for key, item in value.items():
            if key in TIMED:
                continue
            if key == "date" and isinstance(item, str):
                out[key] = "<http date>"  # a server's date header, in recorded headers
                continue
            if key == "backtrace" or key == "error_backtrace":
                out[key] = "<backtrace>" if item else item
                continue
            out[key] = scrub(item, request_id)
        return out
    if isinstance(value, list):
        return [scrub(item, request_id) for item in value]
    if isinstance(value, str) and UUID.search(value):
        if request_id:
            value = value.replace(request_id, "<request_id>")
        return UUID.sub("<uuid>", value)
    return value


def _gzip_without_mtime(encoded: str) -> str:
    """A base64 gzip member with its header's mtime (bytes 4-8, the time of packing) zeroed."""
    raw = bytearray(base64.b64decode(encoded))
    raw[4:8] = b"\0\0\0\0"
    return base64.b64encode(bytes(raw)).decode()


def record(entry: dict[str, Any]) -> dict[str, Any]:
    """One OracleCallback record, comparable across sides."""
    scrubbed: dict[str, Any] = scrub(entry, str(entry.get("request_id", "")))
    return scrubbed


def differences(gem: Any, ours: Any, path: str = "") -> list[str]:
    """Every place where ``ours`` differs from ``gem``, as ``path: gem=… ours=…`` lines."""
    if isinstance(gem, dict) and isinstance(ours, dict):
        out: list[str] = []
        for key in sorted(set(gem) | set(ours), key=str):
            where = f"{path}.{key}" if path else str(key)
            if key not in ours:
                out.append(f"{where}: missing in ours (gem={_short(gem[key])})")
            elif key not in gem:
                out.append(f"{where}: extra in ours (ours={_short(ours[key])})")
            else:
                out += differences(gem[key], ours[key], where)
        return out
    if isinstance(gem, list) and isinstance(ours, list) and len(gem) == len(ours):
        out = []
        for index, (left, right) in enumerate(zip(gem, ours, strict=True)):
            out += differences(left, right, f"{path}[{index}]")
        return out
    if gem != ours or type(gem) is not type(ours):
        return [f"{path}: gem={_short(gem)} ours={_short(ours)}"]
    return []


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


def failed_job(job: dict[str, Any]) -> dict[str, Any]:
    """A retry/dead entry, comparable across sides."""
    return dict(scrub(job))


def state(side: SideState) -> dict[str, Any]:
    """The Redis state of one side, comparable across sides (records excluded)."""
    totals = {k: v for k, v in side.totals.items() if "duration" not in k}
    stats = {re.sub(r"\d{4}-\d{2}-\d{2}", "<day>", k): v for k, v in side.stats.items()}
    return {
        "retry": sorted((failed_job(j) for j in side.retry), key=repr),
        "dead": sorted((failed_job(j) for j in side.dead), key=repr),
        "queues": side.queues,
        "stats": stats,
        "totals": totals,
        "inflight": side.inflight,
        "leftover_keys": [UUID.sub("<uuid>", k) for k in side.leftover_keys],
    }
