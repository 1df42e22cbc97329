"""Lifecycle hooks and middleware, declared on a task or on the engine: what to call when
an attempt starts, succeeds, fails for good, completes, waits or resumes; how to decide a
failure's retry (`catch_error`); and context managers entered around every attempt.

The worker calls them (engine/worker/lifecycle.py); here is only what is declared."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..errors import InvalidArgumentError

Hook = Callable[..., Any]

HOOK_NAMES = ("on_start", "on_success", "on_failure", "on_complete", "on_wait", "on_resume")


@dataclass(frozen=True)
class RetryNow:
    """`catch_error`'s answer: retry at once (an attempt is still used)."""


@dataclass(frozen=True)
class RetryAt:
    """`catch_error`'s answer: retry at `at` (timezone-aware)."""

    at: datetime

    def __post_init__(self) -> None:
        if not isinstance(self.at, datetime) or self.at.tzinfo is None:
            raise InvalidArgumentError(f"RetryAt needs a timezone-aware datetime, got {self.at!r}")


@dataclass(frozen=True)
class NoRetry:
    """`catch_error`'s answer: fail the run now, whatever attempts are left."""


Decision = RetryNow | RetryAt | NoRetry | None


@dataclass
class Hooks:
    """The hooks of a task or of the engine; each list in the order given."""

    on_start: list[Hook] = field(default_factory=list)
    on_success: list[Hook] = field(default_factory=list)
    on_failure: list[Hook] = field(default_factory=list)
    on_complete: list[Hook] = field(default_factory=list)
    on_wait: list[Hook] = field(default_factory=list)
    on_resume: list[Hook] = field(default_factory=list)
    catch_error: list[Hook] = field(default_factory=list)
    middleware: list[Hook] = field(default_factory=list)

    @classmethod
    def of(cls, middleware: Sequence[Hook] | None = None, **hooks: Hook | None) -> Hooks:
        """Hooks from keyword arguments (None: none), each checked to be callable."""
        made = cls()
        for name, fn in hooks.items():
            if fn is not None:
                getattr(made, name).append(_callable(name, fn))
        for m in middleware or ():
            made.middleware.append(_callable("middleware", m))
        return made

    def add(self, name: str, fn: Hook) -> Hook:
        getattr(self, name).append(_callable(name, fn))
        return fn

    def then(self, inner: Hooks) -> Hooks:
        """These hooks (the engine's), then `inner`'s (the task's): hooks run engine first,
        middleware nests engine outermost, `catch_error` asks the task first."""
        merged = Hooks(
            catch_error=inner.catch_error + self.catch_error,
            middleware=self.middleware + inner.middleware,
        )
        for name in HOOK_NAMES:
            setattr(merged, name, getattr(self, name) + getattr(inner, name))
        return merged


def _callable(name: str, fn: Any) -> Hook:
    if not callable(fn):
        raise InvalidArgumentError(f"{name} must be callable, got {fn!r}")
    hook: Hook = fn
    return hook


def positional_arity(fn: Hook) -> int | None:
    """How many positional arguments `fn` takes (None: any number), so that a hook or a
    callback is called with as many of its arguments as it declares."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    count = 0
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            return None
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            count += 1
    return count
