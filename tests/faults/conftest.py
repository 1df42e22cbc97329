"""The fault tests' PostgreSQL cluster: their own, so that they may stop it hard."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .cluster import Cluster


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    c = Cluster().init()
    c.start()
    yield c
    c.destroy()
