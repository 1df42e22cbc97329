"""The `skiplock` command: the database's schema, workers, runs and queues, the dashboard,
local development and a demo."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..api.engine import Engine
from ..errors import InvalidArgumentError, SkiplockError
from ..values import RateLimit, RunStatus
from ..worker.report import plural
from . import output
from . import schedules as schedules_cli
from .watch import watch


def load_app(spec: str) -> Engine:
    """Import 'module:attribute' (the current directory is importable) and return it."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise SkiplockError(f"expected MODULE:ATTRIBUTE, got {spec!r}")
    if "" not in sys.path:
        sys.path.insert(0, "")
    try:
        app = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SkiplockError(f"cannot load {spec!r}: {exc}") from exc
    if not isinstance(app, Engine):
        raise SkiplockError(f"{spec!r} is a {type(app).__name__}, not an engine.Engine")
    return app


def _engine(args: argparse.Namespace) -> Engine:
    return Engine(args.dsn)


def cmd_migrate(args: argparse.Namespace) -> None:
    applied = _engine(args).migrate()
    print(
        f"applied {plural(len(applied), 'file')}: {', '.join(applied)}"
        if applied
        else "schema is current"
    )


def cmd_worker(args: argparse.Namespace) -> None:
    if args.dsn:  # for apps built with Engine() and no DSN in code
        os.environ["SKIPLOCK_DATABASE_URL"] = args.dsn
    app = load_app(args.app)
    queues = [q for q in args.queues.split(",") if q] if args.queues else None
    app.worker(
        queues=queues,
        concurrency=args.concurrency,
        version=args.version,
        shutdown_grace=args.shutdown_grace,
        heartbeat_interval=args.heartbeat_interval,
        lease_timeout=args.lease_timeout,
        freeze_gc=True,  # the process is the worker
        migrate=args.migrate,  # at start-up, waiting for the database as registering does
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        metrics_database=args.metrics_database,
        claim_lanes=None if args.claim_lanes == "auto" else int(args.claim_lanes),
    ).run()


def _statuses(given: list[str] | None) -> list[str] | None:
    """`--status` values in any case; an unknown one lists the valid values."""
    if not given:
        return None
    valid = [s.value for s in RunStatus]
    statuses = [s.strip().upper() for s in given]
    unknown = [g for g, s in zip(given, statuses, strict=True) if s not in valid]
    if unknown:
        raise InvalidArgumentError(
            f"unknown status {unknown[0]!r}; valid (any case): {', '.join(valid)}"
        )
    return statuses


def cmd_runs(args: argparse.Namespace) -> None:
    app = _engine(args)
    if args.action == "list":
        page = app.runs.list(
            status=_statuses(args.status),
            task=args.task,
            tag=args.tag,
            batch=args.batch,
            limit=args.limit,
        )
        output.print_runs(page.data, args.json)
        if page.has_next_page() and not args.json:
            print(f"... more: --limit {args.limit * 2}")
    elif args.action == "show":
        run = app.runs.retrieve(args.run_id)
        output.print_run(run, args.json, app.runs.status_reason(run.id))
    elif args.action == "cancel":
        status = app.runs.cancel(args.run_id)
        print(
            json.dumps({"id": args.run_id, "status": status.value}) if args.json else status.value
        )
    elif args.action == "replay":
        output.print_run(app.runs.replay(args.run_id), args.json)
    elif args.action == "reschedule":
        output.print_run(app.runs.reschedule(args.run_id, delay=args.delay), args.json)
    elif args.action == "purge":
        count = app.runs.purge(
            older_than=args.older_than,
            status=_statuses(args.status),
            task=args.task,
            dry_run=args.dry_run,
        )
        verb = "would delete" if args.dry_run else "deleted"
        if args.json:
            print(json.dumps({"dry_run": args.dry_run, "runs": count}))
        else:
            print(f"{verb} {plural(count, 'finished run')}")
    elif args.action == "logs":
        if args.follow:
            app.check()  # the live feed waits for its database: fail now, in one line
            with contextlib.suppress(KeyboardInterrupt):
                for record in app.runs.follow_logs(args.run_id):
                    output.print_log_record(record, args.json)
        else:
            records = app.runs.logs(args.run_id, limit=10000)
            for record in records:
                output.print_log_record(record, args.json)
            if not records and not args.json:
                print("no log records", file=sys.stderr)
    elif args.action == "watch":
        if (args.run_id is None) == (args.tag is None):
            raise InvalidArgumentError("give a run id or --tag, not both")
        # the live feed waits for its database as a worker does: check it first, so that
        # a wrong address or an unmigrated database fails now, in one line
        app.check()
        with contextlib.suppress(KeyboardInterrupt):  # the way to stop watching a tag
            watch(
                app,
                run_id=args.run_id,
                tag=args.tag,
                out=sys.stdout,
                live_table=sys.stdout.isatty(),
            )


def cmd_queues(args: argparse.Namespace) -> None:
    app = _engine(args)
    if args.action == "pause":
        app.queues.pause(args.name)
    elif args.action == "resume":
        app.queues.resume(args.name)
    elif args.action == "limit":
        app.queues.set_limit(args.name, None if args.limit == "none" else _int(args.limit))
    elif args.action == "rate":
        rate = None if args.rate == "none" else RateLimit.parse(args.rate, burst=args.burst)
        app.queues.set_rate_limit(args.name, rate)
    queues = (
        app.queues.list() if args.action in (None, "list") else [app.queues.retrieve(args.name)]
    )
    if args.json:
        print(json.dumps([q.model_dump(mode="json") for q in queues], indent=2))
        return
    rows = [
        [
            q.name,
            str(q.queued),
            str(q.running),
            "-" if q.concurrency_limit is None else str(q.concurrency_limit),
            "-" if q.rate_limit is None else str(q.rate_limit),
            "yes" if q.paused else "no",
            "-" if q.oldest_queued_age is None else f"{q.oldest_queued_age.total_seconds():.1f}s",
        ]
        for q in queues
    ]
    print(output.table(rows, ["QUEUE", "QUEUED", "RUNNING", "LIMIT", "RATE", "PAUSED", "OLDEST"]))


def cmd_schedules(args: argparse.Namespace) -> None:
    schedules_cli.run(_engine(args), args)


def cmd_db(args: argparse.Namespace) -> None:
    tables = _engine(args).table_health()
    if args.json:
        print(json.dumps([t.model_dump(mode="json") for t in tables], indent=2))
        return
    rows = [
        [
            t.table_name,
            output.size(t.total_bytes),
            output.size(t.table_bytes),
            output.size(t.index_bytes),
            "-" if t.live_tuples is None else str(t.live_tuples),
            "-" if t.dead_tuples is None else str(t.dead_tuples),
            output.when(t.last_vacuum),
            output.when(t.last_analyze),
        ]
        for t in tables
    ]
    header = ["TABLE", "TOTAL", "HEAP", "INDEXES", "LIVE", "DEAD", "VACUUMED", "ANALYZED"]
    print(output.table(rows, header))


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidArgumentError(f"expected a number or 'none', got {text!r}") from None


def cmd_dashboard(args: argparse.Namespace) -> None:
    from ..dashboard import serve

    token = args.token or os.environ.get("SKIPLOCK_DASHBOARD_TOKEN") or None
    app = _engine(args)
    try:
        app.check()
    except SkiplockError as exc:  # served anyway: its pages say the same until it is fixed
        print(f"warning: {exc}", file=sys.stderr, flush=True)
    print(f"skiplock dashboard on http://{args.host}:{args.port}/", flush=True)
    serve(app, host=args.host, port=args.port, token=token)


def cmd_dev(args: argparse.Namespace) -> None:
    from .dev import run_dev

    if args.dsn:
        os.environ["SKIPLOCK_DATABASE_URL"] = args.dsn
    run_dev(load_app(args.app), host=args.host, port=args.port, concurrency=args.concurrency)


def cmd_demo(args: argparse.Namespace) -> None:
    from .demo import main as demo_main

    demo_main(args.dsn)


def _version() -> str:
    try:
        return importlib.metadata.version("skiplock")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was not installed
        return "unknown (not installed)"


_RUNS_ACTIONS = {
    "list": "list runs, newest first, filtered by status, task, tag, batch",
    "show": "show one run: its fields and attempts",
    "cancel": "cancel a run and its descendants",
    "replay": "make a new run with the same payload, on the latest version",
    "reschedule": "move a DELAYED run's start (--delay)",
    "watch": "follow a run, or every run with a tag, live",
    "logs": "print a run's log records (--follow: live, until the run is final)",
    "purge": "delete finished runs for good (--older-than, --status, --task; --dry-run counts)",
}
_QUEUES_ACTIONS = {
    "list": "list queues: queued, running, limit, paused (the default)",
    "pause": "stop a queue's runs from starting",
    "resume": "let a paused queue's runs start again",
    "limit": "set a queue's concurrency limit (a number, or 'none')",
    "rate": "set a queue's rate limit (LIMIT/PERIOD such as 10/1s or 100/1m, or 'none')",
}


class _HelpFormatter(argparse.HelpFormatter):
    """Aligns the help of subcommands with their indent counted (argparse before 3.13 left
    it out, so a long name such as `reschedule` pushed its help to the next line)."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if action.help is not argparse.SUPPRESS and isinstance(action.choices, dict):
            longest = max((len(name) for name in action.choices), default=0)
            needed = longest + self._current_indent + self._indent_increment
            self._action_max_length = max(self._action_max_length, needed)


def _json_flag(parser: argparse.ArgumentParser, default: Any = False) -> None:
    parser.add_argument("--json", action="store_true", default=default, help="print JSON")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skiplock",
        description=__doc__,
        formatter_class=_HelpFormatter,
        epilog="The database: --dsn, else $SKIPLOCK_DATABASE_URL, else an embedded PostgreSQL. "
        "Commands that need it fail within seconds when it cannot be reached "
        "($SKIPLOCK_CONNECT_TIMEOUT, default 5 s); a worker waits for it.",
    )
    p.add_argument("--dsn", help="database URL (default: $SKIPLOCK_DATABASE_URL, else embedded)")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    p.add_argument("--version", action="version", version=f"skiplock {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("migrate", help="apply the sql/ migrations (idempotent)").set_defaults(
        fn=cmd_migrate
    )

    w = sub.add_parser("worker", help="run a worker for the tasks of MODULE:APP")
    w.add_argument("app", help="the Engine to serve, as MODULE:ATTRIBUTE")
    w.add_argument("--concurrency", type=int, default=10)
    w.add_argument(
        "--claim-lanes",
        default="auto",
        choices=("1", "2", "auto"),
        help="auto (default): completions recorded apart from claims, on the second "
        "session, while no other worker holds a lease; 1: claims carry them; 2: two claim "
        "lanes, each half the slots",
    )
    w.add_argument("--queues", help="comma-separated queue names (default: all)")
    w.add_argument("--version", help="deployment version (default: $SKIPLOCK_VERSION or 'dev')")
    w.add_argument(
        "--migrate",
        action="store_true",
        help="apply the migrations before starting (waiting for the database)",
    )
    w.add_argument("--heartbeat-interval", type=float, default=5.0, help="seconds")
    w.add_argument(
        "--lease-timeout",
        type=float,
        default=30.0,
        help="seconds without a heartbeat after which the worker's runs are crashed",
    )
    w.add_argument(
        "--shutdown-grace",
        type=float,
        default=30.0,
        help="seconds running attempts get to finish after SIGTERM",
    )
    w.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="serve Prometheus metrics on this port (needs skiplock[metrics])",
    )
    w.add_argument(
        "--metrics-host",
        default="0.0.0.0",
        metavar="HOST",
        help="the address the metrics server binds (default: all, 0.0.0.0)",
    )
    w.add_argument(
        "--metrics-database",
        action="store_true",
        help="serve the database-wide figures too (queues, waiting runs, workers): "
        "one worker, or the dashboard's /metrics, is enough",
    )
    _logging_options(w)
    w.set_defaults(fn=cmd_worker)

    r = sub.add_parser(
        "runs", help="inspect and control runs; follow them live", formatter_class=_HelpFormatter
    )
    rs = r.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions = {
        name: rs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        for name, text in _RUNS_ACTIONS.items()
    }
    ls = actions["list"]
    ls.add_argument(
        "--status",
        action="append",
        help="repeatable; any case: " + ", ".join(s.value for s in RunStatus),
    )
    ls.add_argument("--task", action="append", help="repeatable")
    ls.add_argument("--tag", action="append", help="repeatable")
    ls.add_argument("--batch")
    ls.add_argument("--limit", type=int, default=20)
    for name in ("show", "cancel", "replay", "reschedule"):
        actions[name].add_argument("run_id")
    actions["reschedule"].add_argument("--delay", required=True, help="e.g. 30s, 10m, 1h")
    wt = actions["watch"]
    wt.add_argument("run_id", nargs="?", help="follow this run until its final status")
    wt.add_argument("--tag", help="follow every run with this tag (Ctrl-C to stop)")
    lg = actions["logs"]
    lg.add_argument("run_id")
    lg.add_argument(
        "--follow", "-f", action="store_true", help="print new records as they come, until final"
    )
    lg.add_argument("--json", action="store_true", help="print one JSON object a line")
    pg = actions["purge"]
    pg.add_argument("--older-than", help="finished longer ago than this, e.g. 90d (default: any)")
    pg.add_argument("--status", action="append", help="repeatable; a final status, any case")
    pg.add_argument("--task", action="append", help="repeatable")
    pg.add_argument("--dry-run", action="store_true", help="count what would go; delete nothing")
    for name in ("list", "show", "cancel", "replay", "reschedule", "purge"):
        _json_flag(actions[name])
    r.set_defaults(fn=cmd_runs)

    q = sub.add_parser(
        "queues",
        help="inspect queues; pause, resume, change limits",
        formatter_class=_HelpFormatter,
    )
    _json_flag(q)  # `skiplock queues --json`, and after the action too:
    qs = q.add_subparsers(dest="action", metavar="ACTION")
    for name, text in _QUEUES_ACTIONS.items():
        sp = qs.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        if name != "list":
            sp.add_argument("name")
        if name == "limit":
            sp.add_argument("limit", help="a number, or 'none' for unlimited")
        if name == "rate":
            sp.add_argument(
                "rate", help="LIMIT/PERIOD: at most LIMIT runs start per PERIOD, or 'none'"
            )
            sp.add_argument(
                "--burst", type=int, default=1, help="runs that may start at once (default 1)"
            )
        # SUPPRESS: unless given here, the flag keeps what `queues --json` set
        _json_flag(sp, default=argparse.SUPPRESS)
    q.set_defaults(fn=cmd_queues)

    schedules_cli.add_parser(sub, _json_flag, _HelpFormatter, cmd_schedules)

    db = sub.add_parser("db", help="the database: table health (sizes, dead tuples, vacuum)")
    dbs = db.add_subparsers(dest="action", metavar="ACTION", required=True)
    health = dbs.add_parser(
        "health",
        help="each skiplock table's size, dead tuples, last vacuum and analyze",
        description="Each skiplock table's size, dead tuples, last vacuum and analyze "
        "(the view skiplock.table_health), largest first.",
    )
    _json_flag(health)
    db.set_defaults(fn=cmd_db)

    d = sub.add_parser("dashboard", help="serve the web dashboard")
    d.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument(
        "--token", help="access token, required off loopback ($SKIPLOCK_DASHBOARD_TOKEN)"
    )
    d.set_defaults(fn=cmd_dashboard)

    dev = sub.add_parser(
        "dev",
        help="local development: migrations, a worker and the dashboard",
        description="Local development in one process: the embedded PostgreSQL (unless a "
        "database is configured), migrations, a worker of version 'dev' and the dashboard.",
    )
    dev.add_argument("app", help="the Engine to serve, as MODULE:ATTRIBUTE")
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=8080)
    dev.add_argument("--concurrency", type=int, default=10)
    _logging_options(dev)
    dev.set_defaults(fn=cmd_dev)

    sub.add_parser("demo", help="a worker and a few runs on the embedded PostgreSQL").set_defaults(
        fn=cmd_demo
    )
    return p


def _logging_options(p: argparse.ArgumentParser) -> None:
    """`--log-level` and `--quiet`, for the commands that run a worker."""
    p.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="what to log (default: INFO, with a line per attempt outcome)",
    )
    p.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no line per attempt outcome (logger skiplock.runs); other logs as --log-level",
    )


def _configure_logging(args: argparse.Namespace) -> None:
    """Log to stderr: at --log-level if given, else at INFO for the commands that run a
    worker (and with -v), else WARNING. --quiet silences the lines about runs."""
    level = getattr(args, "log_level", None)
    if level is None:
        level = "INFO" if args.verbose or args.command in ("worker", "dev") else "WARNING"
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if getattr(args, "quiet", False):
        logging.getLogger("skiplock.runs").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _configure_logging(args)
    try:
        args.fn(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
    except SkiplockError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (`skiplock runs list | head -1`): stop quietly, as git does,
        # with the status a process killed by SIGPIPE has; stdout goes to /dev/null so that
        # the interpreter's last flush at exit does not complain either
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    return 0
