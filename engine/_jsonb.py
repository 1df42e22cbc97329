"""What PostgreSQL's jsonb cannot store, checked before a value is sent.

jsonb refuses the escape \\u0000 (a NUL character in a string), which JSON allows. A
task's output or metadata holding one would be refused together with the batch of
outcomes it travels in; checked before, the one attempt fails with a clear error. (The
other thing jsonb refuses, a bare NaN or Infinity, pydantic never writes, and metadata
is encoded with allow_nan=False.)
"""

from __future__ import annotations

import re

# \u0000 whose backslash is not itself escaped: after an even run of backslashes
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_text: str) -> bool:
    """Whether JSON text holds a NUL character (the one string jsonb refuses)."""
    return "\\u0000" in json_text and _NUL_ESCAPE.search(json_text) is not None
