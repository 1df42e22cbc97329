"""What the CLI prints: tables, times, a run and its attempts, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import LogRecord, Run


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def size(n: int) -> str:
    """Bytes as people read them: 8.0 kB, 1.2 MB (powers of 1024, as pg_size_pretty)."""
    if n < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("kB", "MB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def print_runs(runs: list[Run[Any, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps([r.model_dump(mode="json") for r in runs], indent=2))
        return
    header = ["ID", "TASK", "STATUS", "ATTEMPTS", "CREATED", "FINISHED", "TAGS"]
    rows = [
        [
            r.id,
            r.task_identifier,
            r.status.value,
            str(r.attempt_count),
            when(r.created_at),
            when(r.finished_at),
            ",".join(r.tags),
        ]
        for r in runs
    ]
    print(table(rows, header))


def print_run(run: Run[Any, Any], as_json: bool, reason: str | None = None) -> None:
    if as_json:
        dumped = run.model_dump(mode="json")
        print(json.dumps({**dumped, "status_reason": reason} if reason else dumped, indent=2))
        return
    fields: dict[str, Any] = run.model_dump(mode="json", exclude={"attempts"})
    if reason:  # right under the status it explains
        status = fields.pop("status")
        fields = {"id": fields.pop("id"), "status": status, "why": reason, **fields}
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")
    if run.attempts:
        print()
        print(
            table(
                [
                    [
                        a.id,
                        str(a.number),
                        a.status,
                        when(a.started_at),
                        when(a.finished_at),
                        a.worker_id,
                    ]
                    for a in run.attempts
                ],
                ["ATTEMPT", "N", "STATUS", "STARTED", "FINISHED", "WORKER"],
            )
        )


def print_log_record(record: LogRecord, as_json: bool) -> None:
    """One line (its traceback indented below it), or one JSON object, flushed: a follow
    shows each record as it comes."""
    if as_json:
        print(record.model_dump_json(), flush=True)
        return
    at = record.at.astimezone().strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    line = f"{at} {record.level:<8} [{record.attempt}] {record.logger}: {record.message}"
    if record.exception:
        line += "\n" + "\n".join(f"    {x}" for x in record.exception.splitlines())
    print(line, flush=True)
