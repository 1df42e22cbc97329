"""Trigger options: checked and normalised in Python before anything is sent."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypedDict

from .._durations import Duration, delay_options, parse_seconds
from ..errors import InvalidArgumentError
from ..values import Debounce, Queue


class TriggerOptions(TypedDict, total=False):
    """Every option `trigger` takes, as README's Concepts section describes them; a None
    value is the same as leaving the option out (the task's default applies)."""

    delay: Duration | datetime | None
    ttl: Duration | None
    idempotency_key: str | None
    idempotency_key_ttl: Duration | None
    tags: str | Sequence[str] | None
    metadata: dict[str, Any] | None
    queue: str | Queue | None
    concurrency_key: str | None
    priority: int | None
    max_attempts: int | None
    max_duration: float | timedelta | None
    version: str | None
    rate_limit_key: str | None
    rate_cost: int | None
    debounce: Debounce | None


_KNOWN = frozenset(TriggerOptions.__annotations__)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string, got {value!r}")
    if "\x00" in value:
        raise InvalidArgumentError(f"{name} must not contain NUL characters")
    return value


def _positive(name: str, value: Duration) -> float:
    seconds = parse_seconds(value, name)
    if seconds <= 0:
        raise InvalidArgumentError(f"{name} must be positive, got {value!r}")
    return seconds


def build(options: Mapping[str, Any], defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON options for skiplock.trigger(): `options` over the task's `defaults`.

    Raises `InvalidArgumentError` (or a subclass) naming the bad option."""
    unknown = set(options) - _KNOWN
    if unknown:
        raise InvalidArgumentError(
            f"unknown trigger option(s): {', '.join(sorted(unknown))}; "
            f"valid: {', '.join(sorted(_KNOWN))}"
        )
    merged = {**(defaults or {}), **{k: v for k, v in options.items() if v is not None}}
    out: dict[str, Any] = {}
    out.update(delay_options(merged.get("delay")))
    if "ttl" in merged:
        out["ttl"] = _positive("ttl", merged["ttl"])
    if "idempotency_key" in merged:
        out["idempotency_key"] = _text("idempotency_key", merged["idempotency_key"])
    if "idempotency_key_ttl" in merged:
        out["idempotency_key_ttl"] = _positive("idempotency_key_ttl", merged["idempotency_key_ttl"])
    if "tags" in merged:
        tags = merged["tags"]
        if not isinstance(tags, str | list | tuple):
            raise InvalidArgumentError(f"tags must be a string or a list of strings, got {tags!r}")
        out["tags"] = [_text("tag", t) for t in ([tags] if isinstance(tags, str) else tags)]
    if "metadata" in merged:
        metadata = merged["metadata"]
        if not isinstance(metadata, dict):
            raise InvalidArgumentError("metadata must be a dict")
        try:
            json.dumps(metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"metadata is not JSON-serialisable: {exc}") from None
        out["metadata"] = metadata
    if "queue" in merged:
        queue = merged["queue"]
        out["queue"] = queue.name if isinstance(queue, Queue) else _text("queue", queue)
    if "concurrency_key" in merged:
        out["concurrency_key"] = _text("concurrency_key", merged["concurrency_key"])
    for name in ("priority", "max_attempts"):
        if name in merged:
            value = merged[name]
            if not isinstance(value, int) or isinstance(value, bool):
                raise InvalidArgumentError(f"{name} must be an int, got {value!r}")
            out[name] = value
    if "max_duration" in merged:
        out["max_duration"] = _positive("max_duration", merged["max_duration"])
    if "version" in merged:
        out["version"] = _text("version", merged["version"])
    if "rate_limit_key" in merged:
        key = _text("rate_limit_key", merged["rate_limit_key"])
        if len(key) > 256:
            raise InvalidArgumentError("rate_limit_key must be at most 256 characters")
        out["rate_limit_key"] = key
    if "rate_cost" in merged:
        cost = merged["rate_cost"]
        if not isinstance(cost, int) or isinstance(cost, bool) or not 1 <= cost <= 2**31 - 1:
            raise InvalidArgumentError(
                f"rate_cost must be a whole number of at least 1, got {cost!r}"
            )
        out["rate_cost"] = cost
    if "debounce" in merged:
        debounce = merged["debounce"]
        if not isinstance(debounce, Debounce):
            raise InvalidArgumentError(f"debounce must be a Debounce, got {debounce!r}")
        if "delay" in merged or "idempotency_key" in merged:
            raise InvalidArgumentError("debounce cannot be combined with delay or idempotency_key")
        out["debounce"] = debounce.option()
    return out
