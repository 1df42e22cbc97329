"""A trigger for a task nobody declares still makes its run (Trigger.dev's semantics) but
warns, naming the closest known ids: most such triggers are typos."""

from __future__ import annotations

import asyncio
import warnings

import pytest

from engine import Engine, RunStatus, TaskContext
from engine.db import queries
from engine.errors import UnknownTaskWarning


def test_a_typo_warns_with_the_close_match_and_still_makes_the_run(app: Engine) -> None:
    @app.task("flaky-greet")
    def greet(p: None, ctx: TaskContext) -> None: ...

    with pytest.warns(UnknownTaskWarning, match=r"'flaky_greet'.*did you mean 'flaky-greet'"):
        h = app.trigger("flaky_greet", None)
    assert h.status is RunStatus.PENDING_VERSION
    assert app.runs.retrieve(h).status is RunStatus.PENDING_VERSION

    async def by_async() -> None:
        with pytest.warns(UnknownTaskWarning, match="did you mean 'flaky-greet'"):
            await app.trigger_async("flaky_greet", None)
        await app.close_async()

    asyncio.run(by_async())


def test_a_deployed_task_or_a_known_one_does_not_warn(app: Engine) -> None:
    @app.task("known-here")
    def here(p: None, ctx: TaskContext) -> None: ...

    app.db.run(
        queries.register_worker(
            "worker_elsewhere",
            "v1",
            "other-host",
            1,
            None,
            1,
            [
                {
                    "id": "deployed-elsewhere",
                    "queue": "deployed-elsewhere",
                    "concurrency_limit": None,
                    "max_attempts": 1,
                    "max_duration": None,
                    "ttl": None,
                }
            ],
            30.0,
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownTaskWarning)
        app.trigger("known-here", None)  # PENDING_VERSION: no worker yet, but defined here
        app.trigger("deployed-elsewhere", None)  # QUEUED: a deployment has it
        h = app.trigger("deployed-elsewhere", None, version="v9")  # pinned to no deployment
    assert h.status is RunStatus.PENDING_VERSION
