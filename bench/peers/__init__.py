"""One module per system under comparison, each with the same small interface
(`bench.peers.base.System`). `SYSTEMS` lists them in table order."""

from __future__ import annotations

from bench.peers.base import System


def systems() -> dict[str, System]:
    """Name -> system, skiplock first. Imported lazily so that a peer that is not installed
    only fails when it is asked for."""
    from bench.peers.chancy_peer import Chancy
    from bench.peers.pgqueuer_peer import PgQueuer
    from bench.peers.procrastinate_peer import Procrastinate
    from bench.peers.skiplock_peer import Skiplock

    found: list[System] = [Skiplock(), PgQueuer(), Procrastinate(), Chancy()]
    return {s.name: s for s in found}


NAMES = ("skiplock", "pgqueuer", "procrastinate", "chancy")
