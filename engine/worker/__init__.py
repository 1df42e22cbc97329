"""The worker runtime: `Worker` (runtime.py) and the parts it is composed of."""

from .runtime import Worker

__all__ = ["Worker"]
