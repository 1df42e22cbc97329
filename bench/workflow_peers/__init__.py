"""The workflow engines bench/workflows.py compares, one module each behind the small
interface of `bench.workflow_peers.base.Peer`; their worker apps beside them."""

from __future__ import annotations

from bench.workflow_peers.base import Peer

NAMES = ("skiplock", "dbos", "absurd")


def peers() -> dict[str, Peer]:
    """Name -> peer, skiplock first; imported lazily, so that a peer that is not installed
    only fails when it is asked for."""
    from bench.workflow_peers.absurd_peer import AbsurdPeer
    from bench.workflow_peers.dbos_peer import Dbos
    from bench.workflow_peers.skiplock_peer import Skiplock

    return {p.name: p for p in (Skiplock(), Dbos(), AbsurdPeer())}
