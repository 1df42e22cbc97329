"""`skiplock runs watch`: runs changing live in the terminal, from a realtime subscription.

On a terminal the screen is redrawn as a table of the runs seen (newest first); into a
pipe or file each change is one line, which scripts can follow.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TextIO

from ..api.engine import Engine
from ..errors import InvalidArgumentError
from .output import table

if TYPE_CHECKING:
    from ..models import Run

_COLUMNS = ["ID", "TASK", "STATUS", "ATTEMPTS", "UPDATED", "METADATA"]
_MAX_ROWS = 40
_CLEAR = "\x1b[H\x1b[2J"


def _cells(run: Run[Any, Any]) -> list[str]:
    metadata = json.dumps(run.metadata, separators=(",", ":")) if run.metadata else "-"
    if len(metadata) > 40:
        metadata = metadata[:39] + "…"
    return [
        run.id,
        run.task_identifier,
        run.status.value,
        str(run.attempt_count),
        run.updated_at.strftime("%H:%M:%S.%f")[:-3],
        metadata,
    ]


def watch(
    app: Engine,
    *,
    run_id: str | None = None,
    tag: str | None = None,
    out: TextIO,
    live_table: bool,
) -> None:
    """Follow one run (until its final status) or every run with `tag` (until Ctrl-C)."""
    runs: Iterator[Run[Any, Any]]
    if run_id is not None:
        runs, title = app.runs.subscribe_to_run(run_id), f"run {run_id}"
    elif tag is not None:
        runs, title = app.runs.subscribe_to_runs_with_tag(tag), f"runs tagged {tag!r}"
    else:
        raise InvalidArgumentError("watch needs a run id or a tag")
    latest: dict[str, Run[Any, Any]] = {}
    for run in runs:
        if not live_table:
            print("  ".join(_cells(run)), file=out, flush=True)
            continue
        latest[run.id] = run
        shown = sorted(latest.values(), key=lambda r: r.id, reverse=True)[:_MAX_ROWS]
        more = f"\n… and {len(latest) - len(shown)} more" if len(latest) > len(shown) else ""
        print(
            f"{_CLEAR}watching {title} (Ctrl-C to stop)\n\n"
            f"{table([_cells(r) for r in shown], _COLUMNS)}{more}",
            file=out,
            flush=True,
        )
