"""The workflow engines bench/workflows.py compares, one module each behind the small
interface of `bench.workflow_peers.base.Peer`; their worker apps beside them."""

from __future__ import annotations

from bench.workflow_peers.base import Peer

NAMES = ("skiplock", "dbos", "absurd")


def classes() -> dict[str, type[Peer]]:
    """Name -> peer class, skiplock first; imported lazily, so that a peer that is not
    installed only fails when it is asked for."""
    from bench.workflow_peers.absurd_peer import AbsurdPeer
    from bench.workflow_peers.dbos_peer import Dbos
    from bench.workflow_peers.skiplock_peer import Skiplock

    return {c.name: c for c in (Skiplock, Dbos, AbsurdPeer)}


def peers() -> dict[str, Peer]:
    """Name -> peer at its default settings (the fastest variant for each kind)."""
    return {name: cls() for name, cls in classes().items()}


def peer(spec: str) -> Peer:
    """`name` or `name:variant` (e.g. absurd:async) -> that peer."""
    name, _, variant = spec.partition(":")
    return classes()[name](variant or None)
