"""The `skiplock` command and what it starts: the demo, `skiplock dev`, `runs watch`."""

from .main import main

__all__ = ["main"]
