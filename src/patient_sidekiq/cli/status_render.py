"""The tables of ``patient-sidekiq status`` and ``inflight`` (rich), for any terminal width.

Role: draws the records of :mod:`patient_sidekiq.cli.status_report`: one row per Sidekiq
identity (named as the Busy page's job list and the worker's "started" log line name it),
with its role, queues, busy/concurrency and, where it applies, the HTTP in-flight/capacity;
one row per request in flight. :func:`render` gives the plain text (tests, pipes); the CLI
prints the renderables to the terminal.

Redis keys: none.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import IO, Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from patient_sidekiq.cli.status_report import InflightEntry, ProcessStatus, StatusReport

__all__ = [
    "console",
    "inflight_table",
    "render",
    "render_inflight",
    "render_status",
    "status_table",
]


def status_table(report: StatusReport) -> RenderableType:
    """The processes table, the HTTP figures, the queues table and the job sets."""
    live = len(report.live_workers())
    tagged = any(p.tag for p in report.processes)
    headers = ["Process", "Role", "Queues", "Busy", "HTTP", "State"]
    headers += ["Tag"] if tagged else []
    processes = _table(*headers, justify="lllrrll"[: len(headers)])
    # An identity is never cut or wrapped: it is what to grep the logs for.
    rows = [_process_row(p, report.generated_at) for p in report.processes]
    for column in (0, 1, 3, 4, 5):  # the queues (2) and the tag give way
        _whole(processes, column, [row[column] for row in rows])
    processes.columns[2].overflow = "fold"
    for row in rows:
        processes.add_row(*(row if tagged else row[:-1]))
    totals = report.totals
    http = [
        f"HTTP  in flight {_number(report.inflight_total)} of {_number(report.capacity_total)}"
        f" ({report.utilization:.1f}%), {_number(report.inflight_registered)} registered",
        f"  requests {_number(totals.requests)}  errors {_number(totals.errors)}"
        f"  avg {_shown(totals.average_duration)} s"
        f"  refused at capacity {_number(totals.max_capacity_exceeded)}",
    ]
    if totals.errors_by_type:
        http.append(f"  errors: {_pairs(totals.errors_by_type)}")
    if totals.http_statuses:
        http.append(f"  statuses: {_pairs(totals.http_statuses)}")
    queues = _table("Queue", "Size", "Latency", justify="lrr")
    for q in report.queues:
        queues.add_row(q.name, _number(q.size), _age(q.latency))
    parts: list[RenderableType] = [
        Text(f"Processes ({len(report.processes)}; patient-sidekiq alive: {live})"),
        processes if report.processes else Text("  (none)"),
    ]
    if live == 0:
        parts.append(Text("  No patient-sidekiq worker is alive.", style="bold red"))
    parts += [Text(""), Text("\n".join(http)), Text("")]
    parts.append(Text(f"Queues ({len(report.queues)})"))
    if report.queues:
        parts.append(queues)
    parts.append(
        Text(
            f"Retry {_number(report.retry_size)}  Scheduled {_number(report.scheduled_size)}"
            f"  Dead {_number(report.dead_size)}"
        )
    )
    return Group(*parts)


def render_status(report: StatusReport, width: int = 100) -> str:
    """:func:`status_table` as plain text ``width`` columns wide; ``?`` marks unknowns."""
    return render(status_table(report), width)


def inflight_table(entries: Sequence[InflightEntry]) -> RenderableType:
    """One row per request, in the given order (oldest first)."""
    table = _table("Age", "Request", "Process", "Owner", justify="rlll")
    # Request id, then method and URL (folded), then callback: one cell, so a narrow
    # terminal still shows the whole id.
    table.columns[1].overflow = "fold"
    table.columns[1].min_width = 36  # a UUID
    _whole(table, 2, [e.process_identity or e.process_name for e in entries])
    for e in entries:
        if e.request == "plain":
            target = f"{(e.http_method or '?').upper()} {_shown(e.url)}"
        else:
            target = e.request
        owner = Text("alive") if e.process_alive else Text("GONE", style="bold red")
        table.add_row(
            _age(e.age),
            f"{e.request_id}\n{target}\ncallback {_shown(e.callback_name)}",
            e.process_identity or e.process_name,
            owner,
        )
    title = Text(f"{len(entries)} in flight (oldest first)")
    return Group(title, table) if entries else title


def render_inflight(entries: Sequence[InflightEntry], width: int = 100) -> str:
    """:func:`inflight_table` as plain text ``width`` columns wide."""
    return render(inflight_table(entries), width)


# --- text helpers ---


def console(file: IO[str] | None = None, width: int | None = None) -> Console:
    """A console that prints cells as they are: ``:1234:`` is no emoji code, ``[x]`` no markup
    (identities, queue names and URLs come from Redis)."""
    return Console(
        file=file,
        width=width,
        color_system=None if file is not None else "auto",
        highlight=False,
        emoji=False,
        markup=False,
    )


def render(renderable: RenderableType, width: int) -> str:
    """Plain text of a rich renderable (no colour, no trailing blanks), for tests and pipes."""
    out = io.StringIO()
    console(out, width).print(renderable)
    return "".join(line.rstrip() + "\n" for line in out.getvalue().splitlines())


def _table(*headers: str, justify: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for header, how in zip(headers, justify, strict=True):
        table.add_column(header, justify="right" if how == "r" else "left")
    return table


def _process_row(p: ProcessStatus, now: float) -> list[str | Text]:
    http = "-"
    if p.http is not None:
        http = f"{p.http.inflight:,}/{p.http.capacity:,} ({p.http.utilization:.1f}%)"
    role = _shown(p.role)
    if p.identity is None:
        return [p.name, role, "?", "-", http, "alive" if p.alive else "?", "-"]
    queues = ", ".join(p.queues) if p.queues is not None else "?"
    busy = f"{_number(p.busy)}/{_number(p.concurrency)}"
    return [p.identity, role, queues, busy, http, _state(p, now), _shown(p.tag)]


def _whole(table: Table, column: int, cells: Sequence[str | Text]) -> None:
    """Keep a column's cells on one line, never cut (the other columns give way)."""
    header = str(table.columns[column].header)
    table.columns[column].no_wrap = True
    table.columns[column].min_width = max((len(str(c)) for c in [header, *cells]), default=0)


def _state(p: ProcessStatus, now: float) -> str | Text:
    if p.alive is False:
        since = f" for {_age(now - p.beat)}" if p.beat is not None else ""
        return Text(f"no beat{since}", style="bold red")
    if p.alive is None:
        return "?"
    return "quiet" if p.quiet else "alive"


def _shown(value: Any) -> str:
    return "?" if value is None else str(value)


def _number(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _age(seconds: float | None) -> str:
    """``0.4s``, ``12.3s``, ``5m03s``, ``2h04m``, ``3d02h``; ``?`` when unknown."""
    if seconds is None:
        return "?"
    sign, seconds = ("-", -seconds) if seconds < 0 else ("", seconds)
    if seconds < 60:
        return f"{sign}{seconds:.1f}s"
    whole = int(seconds)
    for unit, size, small, small_size in (("d", 86400, "h", 3600), ("h", 3600, "m", 60)):
        if whole >= size:
            return f"{sign}{whole // size}{unit}{whole % size // small_size:02d}{small}"
    return f"{sign}{whole // 60}m{whole % 60:02d}s"


def _pairs(counts: Mapping[str, int | None]) -> str:
    return ", ".join(f"{name} {_number(count)}" for name, count in counts.items())
