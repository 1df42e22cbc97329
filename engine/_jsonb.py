"""What PostgreSQL's jsonb cannot store, checked before a value is sent.

jsonb refuses the escape \\u0000 (a NUL character in a string) and the non-standard
NaN / Infinity some encoders write. A task's output or metadata holding either would be
refused with the outcome it travels with; checked in the worker instead, the attempt
fails with a clear error and the other outcomes are not held up.
"""

from __future__ import annotations

import re

# \u0000 whose backslash is not itself escaped: after an even run of backslashes
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def has_nul(json_text: str) -> bool:
    """Whether JSON text holds a NUL character (the one string jsonb refuses)."""
    return "\\u0000" in json_text and _NUL_ESCAPE.search(json_text) is not None
