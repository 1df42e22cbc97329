"""Connections: the blocking pool keeps a serial caller on one session; the async
connection cache's lanes keep their own sessions, and all lanes together stay within the
bound."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

from helpers import fetch, wait_for

from engine.db.database import AsyncDatabase, Database, Query


def _pid() -> Query[int]:
    return Query("SELECT pg_backend_pid() AS pid", (), lambda rows: rows[0]["pid"])


def _sleep(seconds: float) -> Query[None]:
    return Query("SELECT pg_sleep(%s)", (seconds,), lambda rows: None)


def _open_sessions(dsn: str) -> int:
    return int(
        fetch(dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'lanes'")[0][0]
    )


def test_a_serial_caller_keeps_one_session(dsn: str) -> None:
    # The pool opens its first connection before the first query, instead of racing it
    # and opening a second, which it would then hand out in turn with the first.
    db = Database(dsn)
    try:
        pids = {db.run(_pid()) for _ in range(20)}
        assert len(pids) == 1
        assert db.pool.get_stats()["pool_size"] == 1
    finally:
        db.close()


def test_a_pool_left_open_is_closed_at_exit(dsn: str) -> None:
    # Left to the garbage collector at interpreter shutdown, a pool cannot stop its
    # threads: on Python 3.13 a CLI command waited 20 s for them before it exited.
    script = textwrap.dedent(
        """
        import atexit, sys
        # registered before engine.db.database's own handler: it runs after it (LIFO)
        atexit.register(lambda: print("closed" if db._pool is None else "open"))
        from engine.db.database import Database, Query
        db = Database(sys.argv[1])
        db.run(Query("SELECT 1", (), lambda rows: None))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, dsn], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "closed"
    assert "couldn't stop thread" not in done.stderr


def test_lanes_keep_their_sessions_within_the_bound(dsn: str) -> None:
    db = AsyncDatabase(f"{dsn} application_name=lanes", max_size=3)

    async def scenario() -> None:
        claim = await db.run(_pid(), lane="claim")
        plain = await db.run(_pid())
        assert claim != plain
        # the same session again for each lane, whatever ran in between
        for _ in range(3):
            assert await db.run(_pid(), lane="claim") == claim
            assert await db.run(_pid()) == plain
        # five at once in the default lane: never more than three sessions in all (the
        # claim lane's idle one is closed to make room)
        await asyncio.gather(*(db.run(_sleep(0.2)) for _ in range(5)))
        assert _open_sessions(dsn) <= 3
        pids = await asyncio.gather(*(db.run(_pid()) for _ in range(3)))
        assert claim not in pids
        # the claim lane opens a session of its own again
        again = await db.run(_pid(), lane="claim")
        assert again not in pids
        assert _open_sessions(dsn) <= 3
        await db.close()

    asyncio.run(scenario())
    wait_for(lambda: _open_sessions(dsn) == 0)


def _fails_if(bad: bool) -> Query[int]:
    sql = "SELECT txid_current() / (1 - %s::int) AS x"  # the transaction's id, or an error
    return Query(sql, (int(bad),), lambda rows: int(rows[0]["x"]), idempotent=False)


def test_a_confined_loop_sends_what_waits_together_each_with_its_own_outcome(dsn: str) -> None:
    """Confined (as a worker's loop is), 30 concurrent callers share one session per
    name; those that waited went in one transaction, and a query that fails fails alone
    (its batch is sent again one query at a time)."""
    db = AsyncDatabase(f"{dsn} application_name=confined", max_size=10)

    def open_sessions() -> int:
        rows = fetch(
            dsn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'confined'"
        )
        return int(rows[0][0])

    async def scenario() -> None:
        await db.confine({"claim": "claims"}, "calls")
        claims = await db.run(_pid(), lane="claim")
        calls = await db.run(_pid(), lane="heartbeat")  # any other lane: "calls"
        assert claims != calls
        txids = await asyncio.gather(*(db.run(_fails_if(False)) for _ in range(30)))
        assert len(set(txids)) < 30  # some shared a transaction
        results = await asyncio.gather(
            *(db.run(_fails_if(i == 7)) for i in range(20)), return_exceptions=True
        )
        failed = [i for i, r in enumerate(results) if isinstance(r, BaseException)]
        assert failed == [7]
        assert await db.run(_pid()) == calls and await db.run(_pid(), lane="claim") == claims
        assert open_sessions() == 2
        await db.close()

    asyncio.run(scenario())
    wait_for(lambda: open_sessions() == 0)
