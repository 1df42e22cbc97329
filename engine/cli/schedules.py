"""`skiplock schedules list|show|create|activate|deactivate|delete`."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any

from ..api.engine import Engine
from ..errors import InvalidArgumentError
from . import output

if TYPE_CHECKING:
    from ..models import Schedule

ACTIONS = {
    "list": "list schedules: task, cron, zone, next slot, active (the default)",
    "show": "show one schedule: its fields and its next slots",
    "create": "create a schedule of a task (--cron, --timezone; an upsert with --dedup-key)",
    "activate": "let a schedule fire again, from its next slot after now",
    "deactivate": "stop a schedule from firing",
    "delete": "delete an imperative schedule (its runs stay)",
}


def _print_one(s: Schedule, as_json: bool) -> None:
    fields: dict[str, Any] = s.model_dump(mode="json")
    if as_json:
        print(json.dumps(fields, indent=2))
        return
    width = max(len(k) for k in fields)
    for key, value in fields.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"{key.ljust(width)}  {'-' if shown is None else shown}")


def _print_list(schedules: list[Schedule], as_json: bool) -> None:
    if as_json:
        print(json.dumps([s.model_dump(mode="json") for s in schedules], indent=2))
        return
    rows = [
        [
            s.id,
            s.task_identifier,
            s.cron,
            s.timezone,
            output.when(s.next_slot.astimezone(UTC)) if s.active and s.next_slot else "-",
            "yes" if s.active else "no",
            s.type.lower(),
            s.external_id or "-",
        ]
        for s in schedules
    ]
    header = ["ID", "TASK", "CRON", "TIMEZONE", "NEXT (UTC)", "ACTIVE", "TYPE", "EXTERNAL ID"]
    print(output.table(rows, header))


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"--payload must be JSON: {exc}") from None


def run(app: Engine, args: argparse.Namespace) -> None:
    action = args.action or "list"
    if action == "list":
        page = app.schedules.list(task=args.task, active=args.active, limit=args.limit)
        _print_list(page.data, args.json)
        if page.has_next_page() and not args.json:
            print(f"... more: --limit {args.limit * 2}")
        return
    if action == "create":
        payload = None if args.payload is None else _json(args.payload)
        s = app.schedules.create(
            args.task,
            args.cron,
            timezone=args.timezone,
            external_id=args.external_id,
            deduplication_key=args.dedup_key,
            payload=payload,
            catch_up=args.catch_up,
        )
    elif action == "show":
        s = app.schedules.retrieve(args.id)
    elif action == "activate":
        s = app.schedules.activate(args.id)
    elif action == "deactivate":
        s = app.schedules.deactivate(args.id)
    else:
        app.schedules.delete(args.id)
        print(json.dumps({"deleted": args.id}) if args.json else f"deleted {args.id}")
        return
    _print_one(s, args.json)


def add_parser(
    sub: Any,
    json_flag: Callable[..., None],
    formatter: type[argparse.HelpFormatter],
    command: Callable[[argparse.Namespace], None],
) -> None:
    p = sub.add_parser(
        "schedules",
        help="cron schedules: list, show, create, activate, deactivate, delete",
        formatter_class=formatter,
    )
    json_flag(p)
    ps = p.add_subparsers(dest="action", metavar="ACTION")
    for name, text in ACTIONS.items():
        sp = ps.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        json_flag(sp, default=argparse.SUPPRESS)
        if name == "list":
            sp.add_argument("--task", help="only this task's schedules")
            state = sp.add_mutually_exclusive_group()
            state.add_argument("--active", action="store_true", default=None)
            state.add_argument("--inactive", dest="active", action="store_false")
            sp.add_argument("--limit", type=int, default=100)
        elif name == "create":
            sp.add_argument("task")
            sp.add_argument("--cron", required=True, help="5 fields, e.g. '0 9 * * 1-5'")
            sp.add_argument("--timezone", default="UTC", help="IANA zone (default UTC)")
            sp.add_argument("--external-id")
            sp.add_argument("--dedup-key", help="one schedule per key: create updates it")
            sp.add_argument("--payload", help="JSON handed to each run (payload.payload)")
            sp.add_argument("--catch-up", choices=["latest", "all", "none"], default="latest")
        else:
            sp.add_argument("id")
    p.set_defaults(fn=command, action=None, task=None, active=None, limit=100)
