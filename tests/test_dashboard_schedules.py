"""The dashboard's schedules pages in headless Chromium: the list (cron in words, next
slots in the schedule's zone, last run), a schedule with its last runs, activate and
deactivate behind the CSRF token, and a scheduled run's page linking its schedule."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import test_dashboard
from helpers import deploy, fetch
from playwright.sync_api import Page, expect
from starlette.testclient import TestClient
from test_dashboard import Server, shoot

from engine import Engine, ScheduledPayload, TaskContext
from engine.dashboard import create_app

PARIS = ZoneInfo("Europe/Paris")
# test_dashboard's fixtures: headless Chromium, its pages, the dashboard on a free port
browser = test_dashboard.browser
page = test_dashboard.page
server = test_dashboard.server


def at_clock(dsn: str, at: datetime, query: str, *params: Any) -> Any:
    """`query` in a session whose skiplock.now() is `at` (the Clock of test_schedules)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT set_config('skiplock.fake_now', %s, false)", (at.isoformat(),))
        row = conn.execute(query.encode(), params).fetchone()
    return None if row is None else row[0]


def slot_text(at: datetime, zone: ZoneInfo) -> str:
    return at.astimezone(zone).strftime("%a %Y-%m-%d %H:%M %Z")


def scene(app: Engine, dsn: str) -> tuple[str, str, str]:
    """A declared schedule (weekdays at 09:00 in Paris) and an imperative one (every 15
    minutes) that fired once, its slot a quarter past the hour an hour ago."""

    @app.task("dash-report", cron="0 9 * * 1-5", timezone="Europe/Paris")
    async def report(payload: ScheduledPayload, ctx: TaskContext) -> None: ...

    @app.task("dash-sync")
    async def sync(payload: ScheduledPayload, ctx: TaskContext) -> None: ...

    deploy(app)
    (declared,) = app.schedules.list(type="DECLARATIVE").data
    now = datetime.now(UTC)
    made = now - timedelta(hours=2)
    imperative = at_clock(
        dsn,
        made,
        "SELECT (skiplock.create_schedule('dash-sync', '*/15 * * * *', 'UTC', %s::jsonb)).id",
        json.dumps({"external_id": "tenant-7"}),
    )
    assert at_clock(dsn, made + timedelta(minutes=20), "SELECT skiplock.fire_schedules()") == 1
    run_id = app.schedules.retrieve(imperative).last_run_id
    assert run_id is not None
    return declared.id, imperative, run_id


def test_the_list_shows_each_schedule_in_words_with_its_next_slots(
    app: Engine, dsn: str, server: Server, page: Page
) -> None:
    declared, imperative, run_id = scene(app, dsn)
    page.goto(server.url + "/schedules")
    row = page.locator(f'tr[data-schedule="{declared}"]')
    expect(row).to_contain_text("0 9 * * 1-5")
    expect(row.locator(".words")).to_have_text("At 09:00, Monday through Friday")
    expect(row).to_contain_text("Europe/Paris")
    expect(row.locator(".type")).to_have_text("declarative")
    expect(row.locator(".badge")).to_have_text("active")
    upcoming = app.schedules.retrieve(declared).upcoming
    assert len(upcoming) == 5
    expect(row.locator("ol.slots li")).to_have_text([slot_text(u, PARIS) for u in upcoming])
    for text in row.locator("ol.slots li").all_inner_texts():
        assert re.fullmatch(r"(Mon|Tue|Wed|Thu|Fri) \d{4}-\d\d-\d\d 09:00 CES?T", text), text

    row = page.locator(f'tr[data-schedule="{imperative}"]')
    expect(row.locator(".words")).to_have_text("Every 15 minutes")
    expect(row.locator(".type")).to_have_text("imperative")
    expect(row).to_contain_text("tenant-7")
    s = app.schedules.retrieve(imperative)
    assert s.last_slot is not None
    expect(row).to_contain_text(slot_text(s.last_slot, ZoneInfo("UTC")))
    expect(row.locator("ol.slots li")).to_have_count(5)
    shoot(page, "dashboard-schedules.png")

    # the last run, its page, and back to the schedule through the run's link
    row.locator(f'a[href="/runs/{run_id}"]').click()
    expect(page.locator("#run-schedule")).to_have_text(imperative)
    page.click("#run-schedule")
    page.wait_for_url(f"**/schedules/{imperative}")
    expect(page.locator("#cron-words")).to_have_text("Every 15 minutes")
    expect(page.locator(f'tr[data-run="{run_id}"]')).to_be_visible()

    page.goto(server.url + "/schedules?type=declarative")
    expect(page.locator("tr[data-schedule]")).to_have_count(1)
    page.goto(server.url + "/schedules?state=inactive")
    expect(page.locator("text=No schedules match.")).to_be_visible()


def test_deactivate_and_activate_from_the_list_and_the_schedule_page(
    app: Engine, dsn: str, server: Server, page: Page
) -> None:
    s = app.schedules.create("dash-toggle", "30 8 1 * *", timezone="Asia/Tokyo")
    page.goto(server.url + "/schedules")
    row = page.locator(f'tr[data-schedule="{s.id}"]')
    expect(row.locator(".words")).to_have_text("At 08:30, on day 1 of the month")
    row.locator('button:text("Deactivate")').click()
    expect(page.locator(f'tr[data-schedule="{s.id}"] .badge')).to_have_text("inactive")
    assert not app.schedules.retrieve(s.id).active
    expect(page.locator(f'tr[data-schedule="{s.id}"] ol.slots')).to_have_class("slots off")
    page.locator(f'tr[data-schedule="{s.id}"]').locator('button:text("Activate")').click()
    expect(page.locator(f'tr[data-schedule="{s.id}"] .badge')).to_have_text("active")
    assert app.schedules.retrieve(s.id).active

    page.goto(f"{server.url}/schedules/{s.id}")
    page.click('button:text("Deactivate")')
    expect(page.locator("h1 .badge")).to_have_text("inactive")
    assert not app.schedules.retrieve(s.id).active
    page.click('button:text("Activate")')
    expect(page.locator("h1 .badge")).to_have_text("active")
    assert app.schedules.retrieve(s.id).active


def test_the_actions_need_the_csrf_token(app: Engine) -> None:
    s = app.schedules.create("dash-csrf", "0 0 * * *")
    client = TestClient(create_app(app), base_url="http://127.0.0.1:8080")
    listing = client.get("/schedules")
    assert listing.status_code == 200
    csrf = re.search(r'name="csrf" value="([^"]+)"', listing.text)
    assert csrf is not None
    url = f"/schedules/{s.id}/deactivate"
    assert client.post(url, data={}).status_code == 403
    assert client.post(url, data={"csrf": "guess"}).status_code == 403
    cross_site = client.post(url, data={"csrf": csrf[1]}, headers={"origin": "http://evil.example"})
    assert cross_site.status_code == 403
    assert app.schedules.retrieve(s.id).active
    done = client.post(
        url,
        data={"csrf": csrf[1]},
        headers={"referer": "http://127.0.0.1:8080/schedules"},
        follow_redirects=False,
    )
    assert done.status_code == 303 and done.headers["location"] == "http://127.0.0.1:8080/schedules"
    assert not app.schedules.retrieve(s.id).active
    again = client.post(f"/schedules/{s.id}/activate", data={"csrf": csrf[1]})
    assert again.status_code == 200 and app.schedules.retrieve(s.id).active
    unknown = client.post("/schedules/sched_nope/activate", data={"csrf": csrf[1]})
    assert "schedule sched_nope does not exist" in unknown.text  # the flash, on the page
    assert client.get("/schedules/sched_nope").status_code == 404
    assert client.get("/schedules?limit=lots").status_code == 400


def test_a_schedule_page_shows_its_last_ten_runs_and_a_scheduled_run_links_it(
    app: Engine, dsn: str
) -> None:
    @app.task("dash-many")
    async def many(payload: Any, ctx: TaskContext) -> None: ...

    s = app.schedules.create("dash-many", "0 * * * *")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    runs = [
        fetch(
            dsn,
            "SELECT run_id FROM skiplock.trigger('dash-many', '{}', %s::jsonb)",
            json.dumps(
                {"schedule_id": s.id, "schedule_slot": (start + timedelta(hours=h)).isoformat()}
            ),
        )[0][0]
        for h in range(12)
    ]
    other = many.trigger({})
    client = TestClient(create_app(app), base_url="http://127.0.0.1:8080")
    html = client.get(f"/schedules/{s.id}").text
    shown = re.findall(r'data-run="([^"]+)"', html)
    assert len(shown) == 10 and set(shown) <= set(runs)
    assert 'rel="next"' in html  # the other two are a page further
    assert f'href="/?schedule={s.id}"' in html
    listed = client.get(f"/?schedule={s.id}&limit=25").text
    assert set(re.findall(r'data-run="([^"]+)"', listed)) == set(runs)
    run_page = client.get(f"/runs/{runs[0]}").text
    assert f'href="/schedules/{s.id}"' in run_page
    assert "/schedules/" not in client.get(f"/runs/{other.id}").text.split("<main>", 1)[1]
