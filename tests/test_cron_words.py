"""The cron in words on the schedules pages (engine/dashboard/cron_words.py): what
cron-descriptor says, and the forms where it is handed fields it reads right."""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from engine.dashboard.cron_words import describe


@pytest.mark.parametrize(
    ("cron", "words"),
    [
        ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
        ("0 9 * * mon-FRI", "At 09:00, Monday through Friday"),
        ("*/15 * * * *", "Every 15 minutes"),
        ("* * * * *", "Every minute"),
        ("30 2 1 * *", "At 02:30, on day 1 of the month"),
        ("0 12 * JAN-MAR *", "At 12:00, January through March"),
        ("5/10 * * * *", "Every 10 minutes, starting at 5 minutes past the hour"),
        ("0 0 * * 7", "At 00:00, only on Sunday"),
        ("0 0 * * sat,sun", "At 00:00, only on Saturday and Sunday"),
        ("30 6,14,16 * * *", "At 06:30, 14:30 and 16:30"),
        # the nicknames, which cron-descriptor does not know
        ("@daily", "At 00:00"),
        (" @Hourly ", "Every hour"),
        ("@weekly", "At 00:00, only on Sunday"),
        ("@yearly", "At 00:00, on day 1 of the month, only in January"),
        # a step in day-of-week names days, not weeks ("every 2 weeks, only on Friday"):
        # a/n runs to 7, Sunday
        ("0 0 * * FRI/2", "At 00:00, only on Friday and Sunday"),
        ("0 0 * * 1-5/2", "At 00:00, only on Monday, Wednesday, and Friday"),
        ("0 0 * * */2", "At 00:00, only on Tuesday, Thursday, Saturday, and Sunday"),
        ("0 0 * * 0-7", "At 00:00"),  # not "Sunday through Sunday"
        # both day fields restricted: either matches; one starting with *: both must
        ("0 0 1 * 1-5", "At 00:00, on day 1 of the month, or Monday through Friday"),
        ("0 0 1 * MON", "At 00:00, on day 1 of the month, or on Monday"),
        ("0 0 */2 * MON", "At 00:00, every 2 days, only on Monday"),
        ("0 0 1 * 0-7", "At 00:00"),  # the 1st, or any day
        # lists holding steps or *, and hour lists with ranges under one minute
        ("0 3/10,5 * * *", "At 03:00, 05:00, 13:00 and 23:00"),
        ("2/53,*/58,10 * * * *", "At 0, 2, 10, 55, and 58 minutes past the hour"),
        ("0 9-12,14-17 * * *", "At 09:00, 10:00, 11:00, 12:00, 14:00, 15:00, 16:00 and 17:00"),
        # what the engine refuses has no words
        ("61 * * * *", None),
        ("0 0 * * 1#2", None),
        ("* * * *", None),
    ],
)
def test_cron_in_words(cron: str, words: str | None) -> None:
    assert describe(cron) == words


def _term(low: int, high: int, names: list[str], rnd: random.Random) -> str:
    def value(v: int) -> str:
        named = names and v - low < len(names) and rnd.random() < 0.3  # no name for day 7
        return names[v - low] if named else str(v)

    kind = rnd.random()
    a = rnd.randint(low, high)
    b = rnd.randint(a, high)
    step = rnd.randint(1, high - low)
    if kind < 0.2:
        return "*"
    if kind < 0.35:
        return f"*/{step}"
    if kind < 0.6:
        return value(a)
    if kind < 0.8:
        return f"{value(a)}-{value(b)}"
    if kind < 0.9:
        return f"{value(a)}/{step}"
    return f"{value(a)}-{value(b)}/{step}"


def test_every_form_the_engine_takes_has_words(conn: psycopg.Connection[Any]) -> None:
    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    days = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
    fields = [(0, 59, []), (0, 23, []), (1, 31, []), (1, 12, months), (0, 7, days)]
    rnd = random.Random(7)
    taken = 0
    for _ in range(2000):
        cron = " ".join(
            ",".join(_term(low, high, names, rnd) for _ in range(rnd.choice([1, 1, 2, 3])))
            for low, high, names in fields
        )
        try:
            conn.execute("SELECT skiplock.parse_cron(%s)", (cron,))
        except psycopg.Error as exc:  # one no date matches (0 0 31 FEB *)
            assert exc.sqlstate == "SL008" and "never matches" in str(exc), (cron, exc)
            continue
        taken += 1
        words = describe(cron)
        assert words and ", ," not in words and "  " not in words, cron
    assert taken > 1900
