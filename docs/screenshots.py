"""Render the README's dashboard pictures from a small live scene: docs/dashboard-runs.png,
docs/dashboard-run.png, two runs that say why they wait (dashboard-run-version.png,
dashboard-run-backoff.png), the schedules (dashboard-schedules.png), and the trace of a
run with two attempts, steps, a wait and a child run (dashboard-trace.png).

    python docs/screenshots.py [--dsn postgresql://...]

Without --dsn a database `skiplock_screenshots` is (re)created on the embedded cluster.
An in-process worker runs a few tasks (children, a wait, retries, a failure, metadata)
and fires a schedule, the dashboard is served on a free port, and headless Chromium
(/usr/bin/chromium) takes the pictures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import uvicorn
from playwright.sync_api import sync_playwright
from psycopg import sql
from psycopg.conninfo import make_conninfo

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))

from engine import Engine, Retry, ScheduledPayload, Task, TaskContext, wait  # noqa: E402
from engine.dashboard import create_app  # noqa: E402
from engine.db.embedded import embedded_dsn  # noqa: E402

DB = "skiplock_screenshots"


def fresh_dsn(server: str) -> str:
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DB)))
    return make_conninfo(server, dbname=DB)


def scene(app: Engine) -> tuple[str, str, str, str]:
    @app.task("resize-image")
    async def resize(p: dict[str, int], ctx: TaskContext) -> dict[str, int]:
        ctx.metadata.set("progress", 1.0)
        return {"width": p["width"] // 2}

    @app.task("send-email", retry=Retry(max_attempts=3, min_timeout=0.2, randomize=False))
    def send_email(to: str, ctx: TaskContext) -> str:
        if ctx.attempt == 1:
            raise ConnectionError("SMTP server did not answer")
        return f"sent to {to}"

    @app.task("charge-card", retry=Retry(max_attempts=1))
    def charge(amount: int, ctx: TaskContext) -> None:
        raise ValueError(f"card declined for {amount} EUR")

    @app.task(
        "sync-crm", retry=Retry(max_attempts=5, min_timeout=600, max_timeout=600, randomize=False)
    )
    def sync_crm(account: str, ctx: TaskContext) -> None:
        raise TimeoutError(f"CRM API did not answer for {account}")

    @app.task("process-order")
    async def process(order: dict[str, int], ctx: TaskContext) -> dict[str, object]:
        ctx.metadata.set("step", "images")
        images = await resize.batch_trigger_and_wait([{"width": 800}, {"width": 1200}])
        ctx.metadata.set("step", "cooling off")
        await wait.for_(seconds=1)
        ctx.metadata.set("step", "email")
        mail = await send_email.trigger_and_wait("ada@example.com")
        return {"order": order["id"], "images": [r.unwrap() for r in images], "mail": mail.unwrap()}

    @app.task("daily-report", cron="0 9 * * 1-5", timezone="Europe/Paris")
    async def daily_report(payload: ScheduledPayload, ctx: TaskContext) -> str:
        return f"report of {payload.timestamp:%Y-%m-%d}"

    @app.task("refresh-cache")
    async def refresh_cache(payload: ScheduledPayload, ctx: TaskContext) -> dict[str, object]:
        return {"slot": payload.timestamp.isoformat(), "tenant": payload.external_id}

    @app.task("weekly-digest")
    async def weekly_digest(payload: ScheduledPayload, ctx: TaskContext) -> None: ...

    traced = trace_scene(app)
    worker = app.worker(concurrency=8, version="v42", tick_interval=0.1)
    threading.Thread(target=worker.run, daemon=True).start()
    parent = process.trigger({"id": 1001}, tags=["order:1001", "shop"])
    synced = traced.trigger("acme-corp", tags=["billing"])
    for i in range(3):
        send_email.trigger(f"user{i}@example.com", tags=["newsletter"])
    charge.trigger(120, tags=["order:1002", "shop"])
    resize.trigger({"width": 640}, delay="1h", tags=["shop"])
    # a run pinned to a version no worker has deployed, and one in retry backoff
    pinned = resize.trigger({"width": 320}, version="v43", tags=["shop"])
    backoff = sync_crm.trigger("acme-corp", tags=["crm"])
    deadline = time.monotonic() + 60
    for h in (parent, synced):
        while not app.runs.retrieve(h.id).is_completed and time.monotonic() < deadline:
            time.sleep(0.2)
    while app.runs.retrieve(backoff.id).attempt_count < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    schedules(app, deadline)
    time.sleep(1.0)
    return parent.id, pinned.id, backoff.id, synced.id


def trace_scene(app: Engine) -> Task[str, dict[str, object]]:
    """A run whose trace has it all: attempt 1 fails after its first step; attempt 2
    replays that step's result, waits a second, renders a PDF in a child run and records
    it in a last step."""

    def fetch_invoices(account: str) -> list[int]:
        time.sleep(0.04)
        return [101, 102, 103]

    def mark_synced(invoices: list[int]) -> int:
        time.sleep(0.005)
        return len(invoices)

    @app.task("render-pdf")
    async def render_pdf(invoices: list[int], ctx: TaskContext) -> str:
        await asyncio.sleep(0.12)
        return f"invoices-{len(invoices)}.pdf"

    @app.task("sync-invoices", retry=Retry(max_attempts=2, min_timeout=0.3, randomize=False))
    async def sync_invoices(account: str, ctx: TaskContext) -> dict[str, object]:
        invoices = await ctx.step("fetch-invoices", fetch_invoices, account)
        log = getattr(ctx, "logger", None)  # run logs (marks on the trace) where there are any
        if log is not None:
            log.info("%d invoices for %s", len(invoices), account)
        if ctx.attempt == 1:
            raise ConnectionError("billing API reset the connection")
        await wait.for_(seconds=1)
        pdf = (await render_pdf.trigger_and_wait(invoices)).unwrap()
        synced = await ctx.step("mark-synced", mark_synced, invoices)
        return {"account": account, "pdf": pdf, "synced": synced}

    return sync_invoices


def schedules(app: Engine, deadline: float) -> None:
    """Beside the declared daily-report: a schedule per tenant, one of them made 20 minutes
    ago (the worker's tick fires its latest slot at once), and one deactivated."""
    made = datetime.now(UTC) - timedelta(minutes=20)
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (made.isoformat(),))
        row = conn.execute(
            "SELECT (skiplock.create_schedule('refresh-cache', '*/10 * * * *', 'UTC', %s)).id",
            (json.dumps({"external_id": "acme-corp"}),),
        ).fetchone()
    assert row is not None
    app.schedules.create(
        "refresh-cache", "0 */6 * * *", timezone="Asia/Tokyo", external_id="globex"
    )
    digest = app.schedules.create("weekly-digest", "30 7 * * MON", timezone="America/New_York")
    app.schedules.deactivate(digest)
    while time.monotonic() < deadline:
        fired = app.schedules.retrieve(row[0]).last_run_id
        if fired and app.runs.retrieve(fired).is_completed:
            break
        time.sleep(0.2)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dsn", help="a server to create the scene database on")
    args = ap.parse_args()
    server = args.dsn or embedded_dsn()
    app = Engine(fresh_dsn(server))
    app.migrate()
    run_id, pinned_id, backoff_id, traced_id = scene(app)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    web = uvicorn.Server(uvicorn.Config(create_app(app), port=port, log_level="warning"))
    threading.Thread(target=web.run, daemon=True).start()
    while not web.started:
        time.sleep(0.05)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 760})
        page.goto(f"http://127.0.0.1:{port}/")
        page.screenshot(path=str(DOCS / "dashboard-runs.png"))
        page.set_viewport_size({"width": 1280, "height": 1400})
        page.goto(f"http://127.0.0.1:{port}/runs/{run_id}")
        page.screenshot(path=str(DOCS / "dashboard-run.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 420})
        for name, shown in (("version", pinned_id), ("backoff", backoff_id)):
            page.goto(f"http://127.0.0.1:{port}/runs/{shown}")
            page.screenshot(path=str(DOCS / f"dashboard-run-{name}.png"))
        page.set_viewport_size({"width": 1280, "height": 560})
        page.goto(f"http://127.0.0.1:{port}/schedules")
        page.screenshot(path=str(DOCS / "dashboard-schedules.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 470})
        page.goto(f"http://127.0.0.1:{port}/runs/{traced_id}")
        page.screenshot(path=str(DOCS / "dashboard-trace.png"))
        browser.close()
    web.should_exit = True
    print(f"wrote the dashboard pictures in {DOCS}")


if __name__ == "__main__":
    main()
