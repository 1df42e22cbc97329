"""The worker's PostgreSQL connections: at most three, whatever its concurrency.

Behind a transaction-mode pooler and on small hosted plans, connections are the scarce
resource; a worker holds a fixed number of them:

* the process's LISTEN connection (engine/db/listener.py), for wake-ups and cancels;
* `claims`: the engine's own short statements (lanes "claim", "complete", "heartbeat",
  "timers"): claims, completions and step records, the statements a drain sends over and
  over, on a session that has their functions compiled and plans cached; the heartbeat,
  which must never wait behind task code's queries (the lease would lapse); and the
  timers' wake_due calls, which end sleeps on time (behind task code's queries, 1,000
  sleeps ended p99 71 ms late instead of 38: bench/sleep_lateness.py);
* `calls`: everything else on the worker's loop, in turn: ticks, the log reads, waits,
  logs and metadata of the running attempts, alerts, and the API calls of task code,
  both `async def` tasks' (on the loop) and `def` tasks' (their threads block while the
  loop runs the query: `Database.route`). The queries waiting for it are sent in one
  transaction (engine/db/confined.py).

`Engine(pool_size=N)` bounds the connections of everything else in the process (the
blocking API's pool, other event loops); the worker's loop takes two sessions, or one for
all when `pool_size` is 1. A `def` task's blocking API calls share the worker's
sessions; other connections are its own (an `asyncio.run(...)` in a `def` task, a blocking
API call made on the worker's loop, a thread the task starts itself, a `read_dsn` replica,
`app.transaction()`); so are the application's outside the worker (an application that
runs a worker in one of its threads keeps its pool for its own calls).

Nothing holds a session while it waits for anything but its own query, so a caller
waiting its turn always gets it: a `def` task's thread blocked on the loop never holds
one, and the loop never waits for a thread while holding one.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..api.engine import Engine

SESSIONS = {
    "claim": "claims",
    "complete": "claims",
    "heartbeat": "claims",
    "timers": "claims",
    "claim2": "calls",  # the second claim lane (claims.py)
    "complete2": "calls",  # completions recorded apart from claims (claims.py)
}
DEFAULT_SESSION = "calls"


async def confine(engine: Engine) -> None:
    """Confine the running loop (the worker's) to its sessions; route the blocking API's
    queries made under the worker (its `def` tasks' threads: the context of the calling
    coroutine is theirs) onto it. Call from the worker's main coroutine."""
    await engine.adb.confine(SESSIONS, DEFAULT_SESSION)
    engine.db.route(asyncio.get_running_loop(), engine.adb)


def release(engine: Engine) -> None:
    """Stop routing the blocking API's queries to the running loop (it is ending)."""
    engine.db.unroute()
