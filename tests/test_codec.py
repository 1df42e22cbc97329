"""engine/api/codec.py: the json path for plain JSON types gives exactly what pydantic's
TypeAdapter gives (text and errors), and hands every other value to pydantic."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from engine.api.codec import Codec

PLAIN = [Any, None, type(None), dict, dict[str, Any], list, list[Any]]
VALUES: list[Any] = [
    None,
    0,
    2**70,
    -0.0,
    1e300,
    'é\x00\u2028"\\',
    [1, (2, 3), {"a": None}],
    {"a": 1, "b": [True, None, 1.5]},
    {1: "int key", 2.5: "float key"},
    {True: "bool key"},
    {None: "a None key"},
    {"when": datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)},
    {"x": math.nan, "y": math.inf},
    {1.5, 2.5},
]


class Item(BaseModel):
    n: int


def _pydantic(tp: Any, value: Any) -> str:
    adapter: TypeAdapter[Any] = TypeAdapter(tp)
    return adapter.dump_json(adapter.validate_python(value)).decode()


@pytest.mark.parametrize("tp", PLAIN, ids=repr)
def test_plain_types_encode_as_pydantic_does(tp: Any) -> None:
    codec = Codec(tp)
    assert codec.kind is not None
    for value in VALUES:
        try:
            expected = _pydantic(tp, value)
        except ValidationError:
            with pytest.raises(ValidationError):
                codec.to_json(value)
            continue
        assert codec.to_json(value) == expected, value


@pytest.mark.parametrize("tp", PLAIN, ids=repr)
def test_plain_types_decode_as_pydantic_does(tp: Any) -> None:
    codec = Codec(tp)
    adapter: TypeAdapter[Any] = TypeAdapter(tp)
    for text in ("null", "1", '"s"', "[1, 2.5]", '{"a": {"b": [null]}}'):
        try:
            expected = adapter.validate_json(text)
        except ValidationError:
            with pytest.raises(ValidationError):
                codec.from_json(text)
            with pytest.raises(ValidationError):
                codec.validate(_loads(text))
            continue
        assert codec.from_json(text) == expected
        assert codec.validate(_loads(text)) == expected


def _loads(text: str) -> Any:
    import json

    return json.loads(text)


def test_typed_types_are_pydantic_s() -> None:
    codec = Codec(Item)
    assert codec.kind is None
    assert codec.to_json({"n": "3"}) == '{"n":3}'
    assert codec.from_json('{"n": 4}') == Item(n=4)
    with pytest.raises(ValidationError):
        codec.to_json({"n": "x"})
    with pytest.raises(ValidationError):
        Codec(dict[str, int]).from_json('{"a": "b"}')
