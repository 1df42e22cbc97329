"""The async connection cache: lanes keep their own sessions and settings, and all lanes
together stay within the bound."""

from __future__ import annotations

import asyncio

from helpers import fetch, wait_for

from engine._db import AsyncDatabase, Query


def _setting_and_pid(name: str) -> Query[tuple[str, int]]:
    return Query(
        "SELECT current_setting(%s) AS value, pg_backend_pid() AS pid",
        (name,),
        lambda rows: (rows[0]["value"], rows[0]["pid"]),
    )


def _sleep(seconds: float) -> Query[None]:
    return Query("SELECT pg_sleep(%s)", (seconds,), lambda rows: None)


def _open_sessions(dsn: str) -> int:
    return int(
        fetch(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lanes'")[0][0]
    )


def test_lanes_keep_their_sessions_and_settings_within_the_bound(dsn: str) -> None:
    db = AsyncDatabase(f"{dsn} application_name=lanes", max_size=3)
    db.configure_lane("claim", {"synchronous_commit": "off"})

    async def scenario() -> None:
        claim = await db.run(_setting_and_pid("synchronous_commit"), lane="claim")
        plain = await db.run(_setting_and_pid("synchronous_commit"))
        assert claim[0] == "off" and plain[0] == "on"
        # the same session again for each lane, whatever ran in between
        for _ in range(3):
            assert await db.run(_setting_and_pid("synchronous_commit"), lane="claim") == claim
            assert await db.run(_setting_and_pid("synchronous_commit")) == plain
        # five at once in the default lane: never more than three sessions in all, and
        # none of them with the claim lane's setting
        await asyncio.gather(*(db.run(_sleep(0.2)) for _ in range(5)))
        assert _open_sessions(dsn) <= 3
        values = await asyncio.gather(
            *(db.run(_setting_and_pid("synchronous_commit")) for _ in range(3))
        )
        assert {value for value, _ in values} == {"on"}
        # the claim lane opens a session of its own again, with its setting
        again = await db.run(_setting_and_pid("synchronous_commit"), lane="claim")
        assert again[0] == "off"
        assert _open_sessions(dsn) <= 3
        await db.close()

    asyncio.run(scenario())
    wait_for(lambda: _open_sessions(dsn) == 0)
