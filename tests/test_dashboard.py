"""The web dashboard in headless Chromium (Debian's, driven by Playwright), and its
access rules over real HTTP."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError

import pytest
import uvicorn
from helpers import SKIPLOCK, TESTS, deploy, free_port, spawn_dev, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright
from starlette.testclient import TestClient

from engine import Engine, RunStatus, TaskContext, wait
from engine.dashboard import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# SKIPLOCK_SCREENSHOTS=docs pytest tests/test_dashboard.py refreshes the README's pictures
SCREENSHOTS = os.environ.get("SKIPLOCK_SCREENSHOTS")


class Server:
    """The dashboard on uvicorn in a thread, on a free loopback port."""

    def __init__(self, app: Engine, token: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(app, token=token), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        wait_for(lambda: self.server.started)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    yield context.new_page()
    context.close()


@pytest.fixture
def server(app: Engine) -> Iterator[Server]:
    with Server(app) as s:
        yield s


def shoot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


def test_the_list_shows_runs_and_filters_them(app: Engine, server: Server, page: Page) -> None:
    @app.task("dash-plain")
    def plain(x: int, ctx: TaskContext) -> int:
        return x

    deploy(app)
    tagged = [plain.trigger(i, tags=["dash-tagged"], delay="1h").id for i in range(3)]
    untagged = [plain.trigger(i, delay="1h").id for i in range(2)]
    page.goto(server.url + "/")
    for run_id in tagged + untagged:
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()
    expect(page.locator(f'tr[data-run="{tagged[0]}"] .badge')).to_have_text("DELAYED")
    shoot(page, "dashboard-runs.png")

    page.fill('input[name="tag"]', "dash-tagged")
    page.click('button:text("Filter")')
    page.wait_for_url("**tag=dash-tagged**")
    expect(page.locator("tr[data-run]")).to_have_count(3)
    for run_id in untagged:
        expect(page.locator(f'tr[data-run="{run_id}"]')).to_have_count(0)

    page.click(f'a[href="/runs/{tagged[0]}"]')
    expect(page.locator("#run-status")).to_have_text("DELAYED")
    expect(page.locator("h1")).to_contain_text(tagged[0])


def test_a_run_page_follows_the_run_live_without_reloading(
    app: Engine, server: Server, page: Page, start_worker: Any
) -> None:
    go = threading.Event()

    @app.task("dash-live")
    def live(steps: int, ctx: TaskContext) -> str:
        ctx.metadata.set("progress", "started")
        go.wait(20)
        return "finished"

    h = live.trigger(1, tags=["dash-live"])
    start_worker()
    page.goto(f"{server.url}/runs/{h.id}")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("#run-status")).to_have_text("EXECUTING", timeout=15_000)
    expect(page.locator("#run-metadata")).to_contain_text("started", timeout=15_000)
    shoot(page, "dashboard-run.png")
    go.set()
    expect(page.locator("#run-status")).to_have_text("COMPLETED", timeout=15_000)
    expect(page.locator("pre").filter(has_text="finished")).to_be_visible()
    assert page.evaluate("window.__sameDocument") is True  # updated in place, no reload


def test_the_list_changes_live(app: Engine, server: Server, page: Page) -> None:
    @app.task("dash-list")
    def listed(x: int, ctx: TaskContext) -> int:
        return x

    deploy(app)
    page.goto(server.url + "/?tag=dash-list-live")
    page.evaluate("window.__sameDocument = true")
    expect(page.locator("text=No runs match.")).to_be_visible()
    wait_for(lambda: page.evaluate("document.getElementById('live').textContent") == "● live")
    h = listed.trigger(1, tags=["dash-list-live"], delay="1h")
    expect(page.locator(f'tr[data-run="{h.id}"] .badge')).to_have_text("DELAYED", timeout=15_000)
    app.runs.cancel(h.id)
    expect(page.locator(f'tr[data-run="{h.id}"] .badge')).to_have_text("CANCELED", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True


def test_cancel_from_the_run_page(app: Engine, server: Server, page: Page) -> None:
    @app.task("dash-cancel")
    def cancel_me(x: int, ctx: TaskContext) -> int:
        return x

    deploy(app)
    h = cancel_me.trigger(1, delay="1h")
    page.goto(f"{server.url}/runs/{h.id}")
    expect(page.locator("#run-status")).to_have_text("DELAYED")
    page.click('button:text("Cancel run")')
    expect(page.locator("#run-status")).to_have_text("CANCELED", timeout=15_000)
    assert app.runs.retrieve(h.id).status is RunStatus.CANCELED


def test_queue_actions_and_token_completion_from_the_pages(
    app: Engine, server: Server, page: Page
) -> None:
    @app.task("dash-queue")
    def queued(x: int, ctx: TaskContext) -> int:
        return x

    queued.trigger(1, delay="1h")
    page.goto(server.url + "/queues")
    row = page.locator("tr", has_text="dash-queue")
    row.locator('button:text("Pause")').click()
    expect(page.locator("tr", has_text="dash-queue")).to_contain_text("paused")
    assert app.queues.retrieve("dash-queue").paused
    page.locator("tr", has_text="dash-queue").locator('input[name="limit"]').fill("3")
    page.locator("tr", has_text="dash-queue").locator('button:text("Set")').click()
    expect(page.locator("tr", has_text="dash-queue").locator('input[name="limit"]')).to_have_value(
        "3"
    )
    assert app.queues.retrieve("dash-queue").concurrency_limit == 3
    page.locator("tr", has_text="dash-queue").locator('input[name="limit"]').fill("lots")
    page.locator("tr", has_text="dash-queue").locator('button:text("Set")').click()
    expect(page.locator(".flash")).to_contain_text("whole number")
    page.goto(server.url + "/workers")
    expect(page.locator("h1")).to_have_text("Workers")


def get(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return int(r.status)
    except HTTPError as exc:
        return exc.code
    except URLError:
        return 0  # not listening yet


def test_off_loopback_it_needs_a_token_and_checks_it_on_every_request(dsn: str) -> None:
    refused = subprocess.run(
        [SKIPLOCK, "--dsn", dsn, "dashboard", "--host", "0.0.0.0", "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=TESTS,
        env={k: v for k, v in os.environ.items() if k != "SKIPLOCK_DASHBOARD_TOKEN"},
    )
    assert refused.returncode == 2 and "without an access token" in refused.stderr

    port = free_port()
    proc = subprocess.Popen(
        [SKIPLOCK, "--dsn", dsn, "dashboard", "--host", "0.0.0.0", "--port", str(port)],
        cwd=TESTS,
        env={**os.environ, "SKIPLOCK_DASHBOARD_TOKEN": "t0ken"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(base + "/") != 0, timeout=30)
        for path in ("/", "/queues", "/workers", "/events/runs", "/runs/run_x"):
            assert get(base + path) == 401, path
            assert get(base + path, {"Authorization": "Bearer wrong"}) == 401, path
        assert get(base + "/", {"Authorization": "Bearer t0ken"}) == 200
        post = urllib.request.Request(base + "/queues/q/pause", data=b"csrf=x", method="POST")
        with pytest.raises(HTTPError) as denied:
            urllib.request.urlopen(post)
        assert denied.value.code == 401
    finally:
        proc.terminate()
        proc.wait(10)


def test_tokens_and_reschedules_from_the_run_page(
    app: Engine, server: Server, page: Page, start_worker: Any
) -> None:
    @app.task("dash-approval")
    async def approval(who: str, ctx: TaskContext) -> Any:
        token = await wait.create_token(timeout="1h")
        return {"by": who, "answer": (await wait.for_token(token)).unwrap()}

    start_worker(tick_interval=0.1)
    h = approval.trigger("bob")
    wait_for(lambda: app.runs.retrieve(h.id).status is RunStatus.WAITING)
    page.goto(f"{server.url}/runs/{h.id}")
    page.fill('input[name="output"]', '{"approved": true}')
    page.click('button:text("Complete token")')
    expect(page.locator("#run-status")).to_have_text("COMPLETED", timeout=15_000)
    assert app.runs.retrieve(h.id).output == {"by": "bob", "answer": {"approved": True}}

    later = approval.trigger("carol", delay="1h")
    page.goto(f"{server.url}/runs/{later.id}")
    page.fill('input[name="delay"]', "2h")
    page.click('button:text("Reschedule")')
    soon = datetime.now(UTC) + timedelta(minutes=90)
    wait_for(lambda: (app.runs.retrieve(later.id).delayed_until or soon) > soon)
    expect(page.locator("#run-status")).to_have_text("DELAYED")
    page.fill('input[name="delay"]', "soon-ish")
    page.click('button:text("Reschedule")')
    expect(page.locator(".flash")).to_be_visible()


def test_actions_need_the_csrf_token_and_output_is_escaped(app: Engine) -> None:
    @app.task("dash-escape")
    def escape(x: str, ctx: TaskContext) -> str:
        return x

    evil = "<script>alert(1)</script>"
    h = escape.trigger(evil, tags=["<b>tag</b>"], delay="1h")
    client = TestClient(create_app(app), base_url="http://127.0.0.1:8080")
    page_html = client.get(f"/runs/{h.id}").text
    assert evil not in page_html and "&lt;script&gt;alert(1)&lt;/script&gt;" in page_html
    assert "<b>tag</b>" not in client.get("/").text
    assert client.post(f"/runs/{h.id}/cancel", data={}).status_code == 403
    assert client.post(f"/runs/{h.id}/cancel", data={"csrf": "guess"}).status_code == 403
    csrf = re.search(r'name="csrf" value="([^"]+)"', page_html)
    assert csrf is not None
    cross_site = client.post(
        f"/runs/{h.id}/cancel", data={"csrf": csrf[1]}, headers={"origin": "http://evil.example"}
    )
    assert cross_site.status_code == 403
    assert app.runs.retrieve(h.id).status is not RunStatus.CANCELED
    done = client.post(f"/runs/{h.id}/cancel", data={"csrf": csrf[1]}, follow_redirects=False)
    assert done.status_code == 303 and app.runs.retrieve(h.id).status is RunStatus.CANCELED
    rebound = TestClient(create_app(app), base_url="http://attacker.example")
    assert rebound.get("/").status_code == 403  # loopback-only without a token


def test_skiplock_dev_serves_a_worker_and_the_dashboard(dsn: str) -> None:
    port = free_port()
    proc = spawn_dev(dsn, "cli_app:app", port)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: get(base + "/workers") == 200, timeout=60)
        app = Engine(dsn)
        h = app.trigger("cli-echo", {"n": 1})
        wait_for(lambda: app.runs.retrieve(h.id).status is RunStatus.COMPLETED, timeout=30)
        assert app.runs.retrieve(h.id).ttl == 600  # dev runs expire after 10 minutes
        assert get(f"{base}/runs/{h.id}") == 200
        app.close()
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
