"""A cron expression in words ("At 09:00, Monday through Friday"), for the schedules pages.

cron-descriptor writes the words. It reads cron more loosely than skiplock does
(sql/functions/70_cron.sql, Vixie cron's reading), so each field is handed to it in a
form it gets right, and the two day fields are joined here:
- the nicknames (@daily, ...), which it does not know, become their 5 fields;
- a day-of-week with a step becomes the days it names: cron-descriptor takes FRI/2 for
  "every 2 weeks, only on Friday", and cron has no weeks (FRI/2 is Friday and Sunday, 7);
  0-7 (every day) is not "Sunday through Sunday";
- a list holding a step or a * (0 3/10,5 * * *) becomes its values: it fails on those,
  or words them as "At every 53 minutes, , every 58 minutes";
- hours listed with ranges under one minute (0 9-12,14-17 * * *) become the hours: it
  drops the minute then ("At 09:00 through 12:59 and 14:00 through 17:59");
- when neither day field starts with *, a day matching either one fires (0 0 1 * 1-5:
  the 1st, or any weekday), which it says for single days but not for ranges; when one
  starts with * (*/2), a day must match both, where it says "or".
"""

from __future__ import annotations

import re
from functools import lru_cache

from cron_descriptor import (  # type: ignore[import-untyped]
    CasingTypeEnum,
    ExpressionDescriptor,
    Options,
)

__all__ = ["describe"]

NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# minute, hour, day-of-month, month, day-of-week: their ranges and names
_RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
_MONTHS = ["", "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_NAMES = [[], [], [], _MONTHS, ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]]
_TERM = re.compile(r"(\*|[a-z0-9]+)(?:-([a-z0-9]+))?(?:/([0-9]+))?")
_OPTIONS = Options()
_OPTIONS.use_24hour_time_format = True


@lru_cache(maxsize=1024)
def describe(cron: str) -> str | None:
    """`cron` in words, or None for an expression it cannot read (the engine refuses
    those: a stored schedule always has words)."""
    fields = NICKNAMES.get(cron.strip().lower(), cron).lower().split()
    if len(fields) != 5:
        return None
    values = [_values(f, i) for i, f in enumerate(fields)]
    if any(v is None for v in values):
        return None
    either = not fields[2].startswith("*") and not fields[4].startswith("*")
    for i, field in enumerate(fields):
        if ("," in field and ("/" in field or "*" in field)) or (i == 4 and "/" in field):
            fields[i] = _listed(values[i], i)
    if len(values[4] or ()) == 7:  # every day of the week
        fields[4] = "*"
    if either and "*" in (fields[2], fields[4]):  # either day field: every day matches
        fields[2] = fields[4] = "*"
    if fields[0].isdigit() and "," in fields[1]:
        fields[1] = ",".join(str(h) for h in sorted(values[1] or ()))
    minute, hour, dom, month, dow = fields
    try:
        main = ExpressionDescriptor(f"{minute} {hour} {dom} {month} *", _OPTIONS)
        text = main.get_time_of_day_description() + main.get_day_of_month_description()
        if dow != "*":
            # worded with day-of-month *, where cron-descriptor does not say "or" itself
            week = ExpressionDescriptor(f"{minute} {hour} * {month} {dow}", _OPTIONS)
            days = week.get_day_of_week_description()
            if either:
                days = ", or " + days.removeprefix(", ").removeprefix("only ")
            text += days
        text += main.get_month_description()
        text = main.transform_verbosity(text, use_verbose_format=False)
        return str(ExpressionDescriptor.transform_case(text, CasingTypeEnum.Sentence))
    except Exception:  # a form it cannot word: the page shows the expression alone
        return None


def _values(field: str, i: int) -> set[int] | None:
    """The values field `i` allows, as 70_cron.sql reads it: a/n runs to the field's end,
    and day-of-week 7 is Sunday, 0. None when it does not parse."""
    low, high = _RANGES[i]
    found: set[int] = set()
    for term in field.split(","):
        match = _TERM.fullmatch(term)
        if match is None:
            return None
        first, last, step = match.groups()
        start = low if first == "*" else _value(first, i)
        end = high if first == "*" or (step and not last) else _value(last or first, i)
        every = int(step or 1)
        if start is None or end is None or every < 1:
            return None
        found.update(v % 7 if i == 4 else v for v in range(start, end + 1, every))
    return found


def _value(token: str, i: int) -> int | None:
    low, high = _RANGES[i]
    if token.isdigit():
        return int(token) if low <= int(token) <= high else None
    return _NAMES[i].index(token) if token and token in _NAMES[i] else None


def _listed(values: set[int] | None, i: int) -> str:
    """`values` of field `i` as a list of values and ranges (3 or more in a row), or *
    when it is all of them. Days of the week from Monday, Sunday last as 7."""
    low, high = _RANGES[i]
    ordered = sorted((v or 7) if i == 4 else v for v in values or ())
    if len(ordered) == (7 if i == 4 else high - low + 1):
        return "*"
    runs: list[list[int]] = []
    for v in ordered:
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) >= 3 else ",".join(map(str, r)) for r in runs)
