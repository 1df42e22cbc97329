"""JSON in and out of a declared type: a task's payload and output, step values.

A type that is plain JSON (no annotation, `Any`, `None`, `dict`, `dict[str, Any]`, `list`,
`list[Any]`) takes the json module's path; pydantic (a `TypeAdapter`) is imported and built
only for other types, and for any value the plain path does not take (a datetime, a model,
a NaN, a key that is not a string...), so that results and errors are pydantic's in every
case. A worker whose tasks are untyped never imports pydantic (bench/worker_footprint.py).
"""

from __future__ import annotations

import json
import typing
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import TypeAdapter

_ANY, _NONE, _DICT, _LIST = "any", "none", "dict", "list"
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_DECODE = json.JSONDecoder().decode  # json.loads without its argument checks: 0.2 us less


def _plain_kind(tp: Any) -> str | None:
    """Which plain JSON shape `tp` declares, or None when pydantic must handle it."""
    if tp is Any:
        return _ANY
    if tp is None or tp is type(None):
        return _NONE
    if tp is dict or (typing.get_origin(tp) is dict and typing.get_args(tp) == (str, Any)):
        return _DICT
    if tp is list or (typing.get_origin(tp) is list and typing.get_args(tp) == (Any,)):
        return _LIST
    return None


class Codec:
    """Validation and JSON for one type (a `TypeAdapter`'s validate-and-dump, lazily)."""

    def __init__(self, tp: Any) -> None:
        self.type = tp
        self.kind = _plain_kind(tp)
        self._adapter: TypeAdapter[Any] | None = None

    @property
    def adapter(self) -> TypeAdapter[Any]:
        """The pydantic adapter for the type, built (and pydantic imported) on first use."""
        if self._adapter is None:
            from pydantic import TypeAdapter

            self._adapter = TypeAdapter(self.type)
        return self._adapter

    def warm(self) -> None:
        """Build the adapter now if the type needs one (a worker starting: not in the middle
        of its first run, where importing pydantic and building it took 80-110 ms)."""
        if self.kind is None:
            self.adapter  # noqa: B018 (built and kept by the property)

    def plain_json(self, value: Any) -> str | None:
        """`value` as JSON text when it is plain JSON of the declared shape, else None."""
        kind = self.kind
        if kind is None:
            return None
        if kind == _NONE:
            return "null" if value is None else None
        if kind == _DICT and not (type(value) is dict and all(type(k) is str for k in value)):
            return None
        if kind == _LIST and type(value) is not list:
            return None
        try:
            text = _ENCODE(value)
        except (TypeError, ValueError, RecursionError):
            return None
        # json writes a None key as "null", pydantic as "None": leave any such to pydantic
        return None if '"null":' in text else text

    def to_json(self, value: Any) -> str:
        """`value` validated against the type and encoded: pydantic's errors if invalid."""
        text = self.plain_json(value)
        if text is not None:
            return text
        adapter = self.adapter
        return adapter.dump_json(adapter.validate_python(value)).decode()

    def validate(self, value: Any) -> Any:
        """`value` (decoded JSON) validated against the type (`validate_python`)."""
        if self.kind == _ANY or (self.kind is not None and _is_shape(self.kind, value)):
            return value
        return self.adapter.validate_python(value)

    def from_json(self, text: str | bytes) -> Any:
        """JSON text parsed and validated against the type (`validate_json`)."""
        if self.kind is not None:
            value = _DECODE(text if isinstance(text, str) else text.decode())
            if self.kind == _ANY or _is_shape(self.kind, value):
                return value
        return self.adapter.validate_json(text)


def _is_shape(kind: str, value: Any) -> bool:
    if kind == _NONE:
        return value is None
    if kind == _DICT:
        return type(value) is dict and all(type(k) is str for k in value)
    return kind == _LIST and type(value) is list


def error_kind(exc: BaseException) -> str | None:
    """ "invalid" for a pydantic validation error, "unserialisable" for a serialisation one,
    None for anything else (pydantic is loaded: only its fallback path raises these)."""
    from pydantic import ValidationError
    from pydantic_core import PydanticSerializationError

    if isinstance(exc, ValidationError):
        return "invalid"
    if isinstance(exc, PydanticSerializationError):
        return "unserialisable"
    return None


ANY = Codec(Any)
