"""The cron evaluator of sql/functions/70_cron.sql: parse_cron, next_cron_slot, cron_slots.

Slots are checked against cronsim (healthchecks.io's evaluator, which follows Debian cron
across daylight saving) for some 50 expressions in several zones, from ordinary instants
and from instants just before each DST transition of a year. Where cronsim is off (clocks
that move by 30 minutes, a skipped midnight, a start in a repeated hour), they are checked
against `reference_slots`, the rule of skiplock.cron_slot_after written out on zoneinfo,
and the difference from cronsim is spelled out in a test of its own.
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from cronsim import CronSim, CronSimError

import engine
from engine.db.database import raise_mapped
from engine.errors import SQLSTATE_ERRORS, InvalidArgumentError, InvalidCronError

# cronsim reads no nicknames: what parse_cron makes of them
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

EXPRESSIONS = [
    # minutes and hours: every form of a field
    "* * * * *",
    "*/15 * * * *",
    "*/7 * * * *",  # a step that does not divide the hour
    "0 * * * *",
    "30 * * * *",
    "5,35 * * * *",
    "0-10/3 * * * *",
    "7/20 * * * *",  # a/n: 7, 27, 47
    "1,2,3,5,8,13,21,34,55 * * * *",
    "0 */2 * * *",
    "15 6/5 * * *",  # 6, 11, 16, 21
    "23 0-20/2 * * *",
    "*/10 9-17 * * *",
    "* 2 * * *",  # every minute of the hour a spring-forward skips
    "*/30 1-3 * * *",
    "30 */4 * * *",
    # times of day, in and around the hours DST skips or repeats
    "0 0 * * *",
    "30 2 * * *",
    "30 1 * * *",
    "0,30 2 * * *",
    "0 3 * * *",
    "59 23 * * *",
    "00 09 * * *",
    # days of the week: numbers, names in any case, 0 and 7 for Sunday, steps
    "0 9 * * 1-5",
    "0 9 * * MON-FRI",
    "0 9 * * mon,Wed,FRI",
    "5 4 * * sun",
    "5 4 * * 7",
    "45 23 * * sat",
    "0 0 * * 0,6",
    "0 0 * * 1-7/2",
    "0 12 * * 5/1",
    # days of the month, months
    "15 14 1 * *",
    "0 4 8-14 * *",
    "0 0 1-31/10 * *",
    "0 0 5/9 * *",
    "0 0 31 * *",
    "0 0 30 * *",
    "0 0 29 2 *",  # the leap day
    "0 12 * JAN,jul *",
    "0 12 1 jan-mar,OCT-dec *",
    "0 0 * */3 *",
    "0 0 * 2/4 *",
    "0 0 1 1 *",
    # both day fields restricted: either matches; one starting with *: both must
    "0 0 1,15 * 3",
    "0 0 13 * FRI",
    "0 0 29 2 1",
    "0 0 */2 * mon",
    "0 0 1 * */2",
    *NICKNAMES,
]

COUNT = 50  # slots compared from each start


def _transitions(zone: str, year: int) -> list[datetime]:
    """The instants (to the minute) at which `zone`'s UTC offset changes in `year`."""
    tz = ZoneInfo(zone)

    def offset(at: datetime) -> timedelta | None:
        return at.astimezone(tz).utcoffset()

    def first_change(at: datetime, step: timedelta, steps: int) -> datetime:
        return next(
            at + step * i for i in range(1, steps + 1) if offset(at + step * i) != offset(at)
        )

    day = datetime(year, 1, 1, tzinfo=UTC)
    found: list[datetime] = []
    while day.year == year:
        if offset(day + timedelta(days=1)) != offset(day):
            hour = first_change(day, timedelta(hours=1), 24) - timedelta(hours=1)
            found.append(first_change(hour, timedelta(minutes=1), 60))
        day += timedelta(days=1)
    return found


def starts(zone: str) -> list[datetime]:
    """An ordinary instant (with seconds and microseconds), and 90 minutes before each of
    the zone's DST transitions in 2025 (whole minutes: an instant a slot may fall on)."""
    ordinary = datetime(2025, 1, 15, 10, 17, 23, 500000, tzinfo=UTC)
    return [ordinary, *(t - timedelta(minutes=90) for t in _transitions(zone, 2025))]


def sql_slots(
    conn: psycopg.Connection[Any], cases: list[tuple[str, str, datetime]], count: int = COUNT
) -> list[list[datetime]]:
    """cron_slots for each (cron, zone, after), in one round trip."""
    rows = conn.execute(
        "SELECT skiplock.cron_slots(c.cron, c.zone, c.after, %s)"
        " FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) WITH ORDINALITY"
        " AS c(cron, zone, after, n) ORDER BY c.n",
        (count, [c[0] for c in cases], [c[1] for c in cases], [c[2] for c in cases]),
    ).fetchall()
    return [[slot.astimezone(UTC) for slot in row[0]] for row in rows]


def cronsim_slots(cron: str, zone: str, after: datetime, count: int = COUNT) -> list[datetime]:
    slots = CronSim(NICKNAMES.get(cron, cron), after.astimezone(ZoneInfo(zone)))
    return [next(slots).astimezone(UTC) for _ in range(count)]


def _readings(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """The instants at which the clock of `tz` reads `wall`: none (skipped), one, or two
    (repeated), earliest first."""
    found = set()
    for fold in (0, 1):
        instant = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if instant.astimezone(tz).replace(tzinfo=None) == wall:
            found.add(instant)
    return sorted(found)


def reference_slots(cron: str, zone: str, after: datetime, count: int = COUNT) -> list[datetime]:
    """skiplock.cron_slot_after's rule written out: cronsim gives the wall-clock minutes the
    expression matches on a plain calendar (no zone), zoneinfo the instants the clock reads
    them. Times of day (neither minute nor hour starts with *) fire at the first reading,
    or when the clock skips the minute, at the first minute it reads after it; any other
    expression fires at every reading."""
    expression = NICKNAMES.get(cron, cron)
    minute, hour = expression.split()[:2]
    times_of_day = not minute.startswith("*") and not hour.startswith("*")
    tz = ZoneInfo(zone)
    wall = after.astimezone(tz).replace(tzinfo=None).replace(microsecond=0)
    slots: set[datetime] = set()
    # from 3 hours back: a repeated hour reads earlier minutes again after `after`
    for minute_matched in CronSim(expression, wall - timedelta(hours=3)):
        readings = _readings(minute_matched, tz)
        if times_of_day:
            skipped_to = minute_matched
            while not _readings(skipped_to, tz):
                skipped_to += timedelta(minutes=1)
            fired = _readings(skipped_to, tz)[:1]
        else:
            fired = readings
        slots.update(s for s in fired if s > after)
        done = sorted(slots)[:count]
        if len(done) == count and readings and readings[0] > done[-1] + timedelta(hours=3):
            return done
    raise AssertionError("unreachable: cronsim's minutes never end")


def _mismatches(
    cases: list[tuple[str, str, datetime]],
    got: list[list[datetime]],
    want: list[list[datetime]],
    label: str,
) -> list[str]:
    lines = []
    for (cron, zone, after), g, w in zip(cases, got, want, strict=True):
        if g != w:
            i = next(i for i, (a, b) in enumerate(zip(g, w, strict=True)) if a != b)
            tz = ZoneInfo(zone)
            lines.append(
                f"{cron!r} in {zone} after {after.astimezone(tz)}: slot {i} is "
                f"{g[i].astimezone(tz)}, {label} says {w[i].astimezone(tz)}"
            )
    return lines


def local(zone: str, *fields: int, fold: int = 0) -> datetime:
    """A wall-clock time in `zone`, as the instant (UTC) it is."""
    return datetime(*fields, tzinfo=ZoneInfo(zone), fold=fold).astimezone(UTC)


# -- slots against cronsim ---------------------------------------------------------------


@pytest.mark.parametrize(
    "zone",
    [
        "UTC",
        "Europe/Paris",
        "America/New_York",
        "Asia/Kolkata",  # +05:30, no DST
        "Australia/Sydney",  # southern: forward in October, back in April
        "America/Sao_Paulo",  # no DST since 2019
    ],
)
def test_slots_agree_with_cronsim(conn: psycopg.Connection[Any], zone: str) -> None:
    cases = [(cron, zone, after) for after in starts(zone) for cron in EXPRESSIONS]
    got = sql_slots(conn, cases)
    want = [cronsim_slots(*case) for case in cases]
    assert _mismatches(cases, got, want, "cronsim") == []


def test_the_starts_cross_the_dst_transitions_of_paris_and_new_york() -> None:
    for zone, spring, autumn in [
        (
            "Europe/Paris",
            datetime(2025, 3, 30, 1, tzinfo=UTC),
            datetime(2025, 10, 26, 1, tzinfo=UTC),
        ),
        (
            "America/New_York",
            datetime(2025, 3, 9, 7, tzinfo=UTC),
            datetime(2025, 11, 2, 6, tzinfo=UTC),
        ),
    ]:
        assert starts(zone)[1:] == [spring - timedelta(minutes=90), autumn - timedelta(minutes=90)]


def test_lord_howe_moves_its_clock_by_half_an_hour(conn: psycopg.Connection[Any]) -> None:
    """Australia/Lord_Howe: +10:30, +11:00 in summer. Times of day agree with cronsim;
    every expression agrees with the reference (cronsim's real-time iteration assumes
    whole-hour shifts, see test_where_cronsim_is_off_at_a_half_hour_shift)."""
    zone = "Australia/Lord_Howe"
    cases = [(cron, zone, after) for after in starts(zone) for cron in EXPRESSIONS]
    got = sql_slots(conn, cases)
    assert _mismatches(cases, got, [reference_slots(*c) for c in cases], "the reference") == []
    times_of_day = [
        (case, slots)
        for case, slots in zip(cases, got, strict=True)
        if not any(f.startswith("*") for f in NICKNAMES.get(case[0], case[0]).split()[:2])
    ]
    assert len(times_of_day) > 60
    assert [slots for _, slots in times_of_day] == [cronsim_slots(*c) for c, _ in times_of_day]


def test_the_reference_agrees_with_cronsim_where_cronsim_is_right() -> None:
    """reference_slots is what the SQL is held to where cronsim is off: it must say what
    cronsim says everywhere else."""
    for zone in ("Europe/Paris", "America/New_York"):
        for after in starts(zone):
            for cron in EXPRESSIONS:
                assert reference_slots(cron, zone, after, 20) == cronsim_slots(
                    cron, zone, after, 20
                ), (cron, zone, after)


def test_a_large_sample_of_random_expressions_near_transitions(
    conn: psycopg.Connection[Any],
) -> None:
    """400 random expressions, in zones with every kind of transition (a skipped or
    repeated midnight, 30-minute shifts, a dateline move), mostly from within 4 hours of a
    transition: the SQL says what the reference says."""
    zones = [
        "Europe/Paris",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Santiago",  # DST starts at midnight
        "America/Havana",  # starts at midnight, ends at 1 a.m. back to midnight
        "America/Sao_Paulo",  # at midnight, until 2019
        "Pacific/Chatham",  # +12:45, +13:45
        "Asia/Tehran",
        "Africa/Casablanca",  # DST off during Ramadan
        "Pacific/Apia",  # skipped 2011-12-30 whole
        "UTC",
    ]
    rng = random.Random(20251207)

    def field(low: int, high: int, names: list[str] | None = None) -> str:
        def value(v: int) -> str:
            return (
                names[v - low] if names and v - low < len(names) and rng.random() < 0.4 else str(v)
            )

        kind = rng.random()
        a = rng.randint(low, high)
        b = rng.randint(a, high)
        step = rng.randint(1, high - low)
        if kind < 0.3:
            return "*"
        if kind < 0.4:
            return f"*/{step}"
        if kind < 0.55:
            return ",".join(value(rng.randint(low, high)) for _ in range(rng.randint(2, 4)))
        if kind < 0.7:
            return f"{value(a)}-{value(b)}"
        if kind < 0.8:
            return f"{value(a)}-{value(b)}/{step}"
        if kind < 0.85:
            return f"{value(a)}/{step}"
        return value(a)

    months = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    days = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
    transitions = {
        zone: [t for y in range(2010, 2027) for t in _transitions(zone, y)] for zone in zones
    }
    cases: list[tuple[str, str, datetime]] = []
    while len(cases) < 400:
        fields = [field(0, 59), field(0, 23), field(1, 31), field(1, 12, months), field(0, 7, days)]
        cron = " ".join(fields)
        zone = rng.choice(zones)
        if transitions[zone] and rng.random() < 0.8:
            after = rng.choice(transitions[zone]) + timedelta(
                seconds=rng.randint(-4 * 3600, 4 * 3600)
            )
        else:
            after = datetime(2012, 1, 1, tzinfo=UTC) + timedelta(
                seconds=rng.randint(0, 15 * 365 * 86400)
            )
        try:
            reference_slots(cron, zone, after, 1)
        except (CronSimError, AssertionError):  # never matches, or not within 50 years
            continue
        cases.append((cron, zone, after))
    got = sql_slots(conn, cases, 20)
    want = [reference_slots(*case, 20) for case in cases]
    assert _mismatches(cases, got, want, "the reference") == []


# -- daylight saving, by hand -----------------------------------------------------------


def test_a_time_skipped_by_spring_forward_fires_once_at_the_transition(
    conn: psycopg.Connection[Any],
) -> None:
    """Paris, 2025-03-30: 02:00 CET becomes 03:00 CEST. 02:30 does not exist that night:
    it fires at 03:00 CEST (01:00 UTC); 02:00 and 02:30 both fall there and fire once."""
    after = datetime(2025, 3, 29, 12, tzinfo=UTC)
    [thirty, both] = sql_slots(
        conn, [("30 2 * * *", "Europe/Paris", after), ("0,30 2 * * *", "Europe/Paris", after)], 3
    )
    paris = "Europe/Paris"
    assert thirty == [
        local(paris, 2025, 3, 30, 3, 0),
        local(paris, 2025, 3, 31, 2, 30),
        local(paris, 2025, 4, 1, 2, 30),
    ]
    assert thirty[0] == datetime(2025, 3, 30, 1, 0, tzinfo=UTC)
    assert both == [
        local(paris, 2025, 3, 30, 3, 0),
        local(paris, 2025, 3, 31, 2, 0),
        local(paris, 2025, 3, 31, 2, 30),
    ]


def test_a_time_repeated_by_fall_back_fires_once_at_its_first_reading(
    conn: psycopg.Connection[Any],
) -> None:
    """New York, 2025-11-02: 02:00 EDT becomes 01:00 EST, so 01:30 happens twice: the slot
    fires at 01:30 EDT (05:30 UTC) only. From inside the repeat (01:40 EST), it is done
    for the day."""
    ny = "America/New_York"
    [slots, from_repeat] = sql_slots(
        conn,
        [
            ("30 1 * * *", ny, datetime(2025, 11, 1, 12, tzinfo=UTC)),
            ("30 1 * * *", ny, local(ny, 2025, 11, 2, 1, 40, fold=1)),
        ],
        3,
    )
    assert slots == [
        datetime(2025, 11, 2, 5, 30, tzinfo=UTC),  # 01:30 EDT
        datetime(2025, 11, 3, 6, 30, tzinfo=UTC),  # 01:30 EST, the next day
        datetime(2025, 11, 4, 6, 30, tzinfo=UTC),
    ]
    assert from_repeat == [*slots[1:], datetime(2025, 11, 5, 6, 30, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("zone", "transition"),
    [
        ("Europe/Paris", datetime(2025, 3, 30, 1, tzinfo=UTC)),
        ("Europe/Paris", datetime(2025, 10, 26, 1, tzinfo=UTC)),
        ("America/New_York", datetime(2025, 3, 9, 7, tzinfo=UTC)),
        ("America/New_York", datetime(2025, 11, 2, 6, tzinfo=UTC)),
        ("Australia/Lord_Howe", datetime(2025, 4, 5, 15, tzinfo=UTC)),
        ("Australia/Lord_Howe", datetime(2025, 10, 4, 15, 30, tzinfo=UTC)),
    ],
)
def test_every_quarter_hour_stays_a_quarter_hour_apart_across_transitions(
    conn: psycopg.Connection[Any], zone: str, transition: datetime
) -> None:
    """*/15 fires at every instant the wall clock reads :00, :15, :30 or :45: through a
    skipped hour none is missing in real time, through a repeated one none is doubled."""
    after = transition - timedelta(hours=2, minutes=5)
    [slots] = sql_slots(conn, [("*/15 * * * *", zone, after)], 20)
    assert slots == [transition - timedelta(hours=2) + timedelta(minutes=15 * i) for i in range(20)]
    offsets = {s.astimezone(ZoneInfo(zone)).utcoffset() for s in slots}
    assert len(offsets) == 2


def test_hourly_slots_around_a_half_hour_fall_back(conn: psycopg.Connection[Any]) -> None:
    """Lord Howe, 2025-04-06: 02:00 +11 becomes 01:30 +10:30. "0 * * * *" fires whenever
    the clock reads a whole hour: 01:00 +11, then 02:00 +10:30 an hour and a half later."""
    lh = "Australia/Lord_Howe"
    [slots] = sql_slots(conn, [("0 * * * *", lh, local(lh, 2025, 4, 6, 0, 30))], 3)
    assert slots == [
        datetime(2025, 4, 5, 14, 0, tzinfo=UTC),  # 01:00 +11
        datetime(2025, 4, 5, 15, 30, tzinfo=UTC),  # 02:00 +10:30
        datetime(2025, 4, 5, 16, 30, tzinfo=UTC),  # 03:00 +10:30
    ]


def test_a_skipped_midnight(conn: psycopg.Connection[Any]) -> None:
    """Santiago, 2025-09-07: midnight -04 becomes 01:00 -03. "0 0 * * *" fires at 01:00
    (the transition); "*/30 0 * * *" has no minute of hour 0 that day, so fires the next."""
    cl = "America/Santiago"
    after = local(cl, 2025, 9, 6, 12, 0)
    [midnight, half_hours] = sql_slots(
        conn, [("0 0 * * *", cl, after), ("*/30 0 * * *", cl, after)], 2
    )
    assert midnight == [datetime(2025, 9, 7, 4, 0, tzinfo=UTC), local(cl, 2025, 9, 8, 0, 0)]
    assert half_hours == [local(cl, 2025, 9, 8, 0, 0), local(cl, 2025, 9, 8, 0, 30)]


# -- where cronsim is off -----------------------------------------------------------------


def test_where_cronsim_is_off_at_a_half_hour_shift(conn: psycopg.Connection[Any]) -> None:
    """cronsim jumps forward in real time by whole hours, so on Lord Howe's fall-back night
    it starts "* 2 * * *" at 02:30 instead of 02:00, and "46 * * * *" misses 01:46 +10:30."""
    lh = "Australia/Lord_Howe"
    after = local(lh, 2025, 4, 6, 1, 50)  # +11, before the repeat
    [every_minute, at_46] = sql_slots(
        conn, [("* 2 * * *", lh, after), ("46 * * * *", lh, after)], 2
    )
    assert every_minute == [local(lh, 2025, 4, 6, 2, 0), local(lh, 2025, 4, 6, 2, 1)]
    assert cronsim_slots("* 2 * * *", lh, after, 1) == [local(lh, 2025, 4, 6, 2, 30)]
    assert at_46 == [local(lh, 2025, 4, 6, 1, 46, fold=1), local(lh, 2025, 4, 6, 2, 46)]
    assert cronsim_slots("46 * * * *", lh, after, 1) == [local(lh, 2025, 4, 6, 2, 46)]


def test_where_cronsim_is_off_at_a_skipped_midnight(conn: psycopg.Connection[Any]) -> None:
    """Santiago skips 00:00-00:59 on Sunday 2025-09-07. When cronsim moves to a new day it
    lands on that day's midnight, which does not exist, and fires there (01:00 -03) though
    the clock never reads hour 0 that day; moving hour by hour, it skips the day. The SQL
    skips it both ways."""
    cl = "America/Santiago"
    after = local(cl, 2025, 9, 6, 12, 0)
    sunday_after = [local(cl, 2025, 9, 14, 0, 0), local(cl, 2025, 9, 14, 0, 30)]
    assert cronsim_slots("*/30 0 * * SUN", cl, after, 2) == [
        datetime(2025, 9, 7, 4, 0, tzinfo=UTC),
        sunday_after[0],
    ]
    assert cronsim_slots("*/30 0 * * *", cl, after, 1) == [local(cl, 2025, 9, 8, 0, 0)]
    assert sql_slots(conn, [("*/30 0 * * SUN", cl, after)], 2) == [sunday_after]


def test_where_cronsim_is_off_from_inside_a_repeated_hour(conn: psycopg.Connection[Any]) -> None:
    """From 01:10 EST (the repeat), cronsim reads the wall clock only and gives 01:30 EDT,
    which is before the start; next_cron_slot is always after it."""
    ny = "America/New_York"
    after = local(ny, 2025, 11, 2, 1, 10, fold=1)
    assert cronsim_slots("30 1 * * *", ny, after, 1) == [local(ny, 2025, 11, 2, 1, 30)]
    assert cronsim_slots("30 1 * * *", ny, after, 1)[0] < after
    assert sql_slots(conn, [("30 1 * * *", ny, after)], 1) == [[local(ny, 2025, 11, 3, 1, 30)]]


# -- parsing ------------------------------------------------------------------------------


def parse(conn: psycopg.Connection[Any], cron: str | None) -> list[int]:
    row = conn.execute("SELECT skiplock.parse_cron(%s)", (cron,)).fetchone()
    assert row is not None
    return list(row[0])


def bits(*values: int) -> int:
    return sum(1 << v for v in values)


def test_the_parsed_form_is_five_bit_masks_and_flags(conn: psycopg.Connection[Any]) -> None:
    assert parse(conn, "*/15 9-17 * * mon-fri") == [
        bits(0, 15, 30, 45),
        bits(*range(9, 18)),
        bits(*range(1, 32)),
        bits(*range(1, 13)),
        bits(1, 2, 3, 4, 5),
        0,  # day rule AND (day-of-month is *); minute starts with *
    ]
    assert parse(conn, "30 2 1,15 * 7") == [
        bits(30),
        bits(2),
        bits(1, 15),
        bits(*range(1, 13)),
        bits(0),  # 7 is Sunday, bit 0
        1 | 2,  # either day field matches; a time of day
    ]
    assert parse(conn, "5/20 0-23/6 */10 FEB-apr/2 */3")[:5] == [
        bits(5, 25, 45),
        bits(0, 6, 12, 18),
        bits(1, 11, 21, 31),
        bits(2, 4),
        bits(0, 3, 6),  # 0-7 every 3rd: 0, 3, 6
    ]


def test_names_nicknames_and_spacing(conn: psycopg.Connection[Any]) -> None:
    for nickname, fields in NICKNAMES.items():
        assert parse(conn, nickname) == parse(conn, fields) == parse(conn, nickname.upper())
    assert parse(conn, "0 0 * jan-DEC Sun,mon") == parse(conn, "0 0 * 1-12 0,1")
    assert parse(conn, "0 0 * * 0") == parse(conn, "0 0 * * 7") == parse(conn, "0 0 * * SUN")
    assert parse(conn, "0 0 * * 0-7") == parse(conn, "0 0 * * 0-6")
    assert parse(conn, "  0\t 9 * *   1-5 \n") == parse(conn, "0 9 * * 1-5")
    assert parse(conn, "00 09 01 01 00") == parse(conn, "0 9 1 1 0")


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("61 * * * *", 'invalid cron expression "61 * * * *": minute 61 is out of range 0-59'),
        ("* 24 * * *", "hour 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month 0 is out of range 1-31"),
        ("* * 32 * *", "day-of-month 32 is out of range 1-31"),
        ("* * * 13 *", "month 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week 8 is out of range 0-7"),
        ("99999999999999999999 * * * *", "minute 99999999999999999999 is out of range 0-59"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week) or a nickname"),
        ("* * * * * *", "got 6"),
        ("0 0 1 1 * 2030", "got 6"),
        ("", 'invalid cron expression "": expected 5 fields'),
        ("   ", "got 0"),
        ("garbage", "got 1"),
        (None, "invalid cron expression: it is NULL"),
        ("*/0 * * * *", "minute step 0 is out of range 1-59"),
        ("*/60 * * * *", "minute step 60 is out of range 1-59"),
        ("* */24 * * *", "hour step 24 is out of range 1-23"),
        ("* * * * */8", "day-of-week step 8 is out of range 1-7"),
        ("*/x * * * *", 'minute step "x" is not a number'),
        ("*/ * * * *", 'minute step "" is not a number'),
        ("*/5/2 * * * *", 'minute step "5/2" is not a number'),
        ("30-10 * * * *", "minute range 30-10 runs backwards"),
        ("0 0 * * FRI-MON", "day-of-week range FRI-MON runs backwards"),
        ("* * * foo *", 'month "foo" is not a number (1-12) or a month name (JAN-DEC)'),
        ("* * * * funday", 'day-of-week "funday" is not a number (0-7) or a day name'),
        ("* mon * * *", 'hour "mon" is not a number (0-23)'),
        ("jan * * * *", 'minute "jan" is not a number'),
        ("1,,2 * * * *", 'minute "1,,2" is not valid'),
        ("1, * * * *", 'minute "1," is not valid'),
        ("*-5 * * * *", 'minute "*-5" is not valid'),
        ("1-2-3 * * * *", 'minute "1-2-3" is not valid'),
        ("-5 * * * *", 'minute "-5" is not valid'),
        ("? * * * *", 'minute "?" is not valid'),
        ("0 0 L * *", 'day-of-month "L" is not a number'),
        ("0 0 * * 1#2", 'day-of-week "1#2" is not valid'),
        ("0 0 * * 5L", 'day-of-week "5L" is not a number'),
        ("@reboot", "unknown nickname"),
        ("@every 5m", "unknown nickname"),
        (
            "0 0 30 2 *",
            'invalid cron expression "0 0 30 2 *": it never matches: no month it '
            "allows has a day 30",
        ),
        ("0 0 31 4,6,9,11 *", "it never matches"),
        ("0 0 31 2 */2", "it never matches"),
    ],
)
def test_an_invalid_expression_raises_invalid_cron_error(
    conn: psycopg.Connection[Any], cron: str | None, message: str
) -> None:
    for query, args in [
        ("SELECT skiplock.parse_cron(%s)", (cron,)),
        ("SELECT skiplock.next_cron_slot(%s, 'UTC', now())", (cron,)),
        ("SELECT skiplock.cron_slots(%s, 'UTC', now(), 5)", (cron,)),
    ]:
        with pytest.raises(psycopg.Error) as raised:
            conn.execute(query, args)
        assert raised.value.sqlstate == "SL008"
        assert message in (raised.value.diag.message_primary or "")
        with pytest.raises(InvalidCronError, match="invalid cron expression") as mapped:
            raise_mapped(raised.value)
        assert isinstance(mapped.value, InvalidArgumentError)


def test_invalid_cron_error_is_typed_and_exported() -> None:
    assert SQLSTATE_ERRORS["SL008"] is InvalidCronError
    assert issubclass(InvalidCronError, InvalidArgumentError)
    assert engine.InvalidCronError is InvalidCronError and "InvalidCronError" in engine.__all__


def test_rare_days_that_do_match(conn: psycopg.Connection[Any]) -> None:
    """The leap day; the leap day when it is a Sunday (28 to 40 years apart); February 30th
    or a Monday in February, which is every Monday in February (either day field)."""
    after = datetime(2025, 1, 1, tzinfo=UTC)
    [leap, sunday, mondays] = sql_slots(
        conn,
        [
            ("0 0 29 2 *", "UTC", after),
            ("0 0 29 2 */7", "UTC", after),
            ("0 0 30 2 MON", "UTC", after),
        ],
        3,
    )
    assert leap == [datetime(y, 2, 29, tzinfo=UTC) for y in (2028, 2032, 2036)]
    assert sunday == [datetime(y, 2, 29, tzinfo=UTC) for y in (2032, 2060, 2088)]
    assert mondays == [datetime(2025, 2, d, tzinfo=UTC) for d in (3, 10, 17)]


# -- zones and arguments ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "args", "message"),
    [
        (
            "SELECT skiplock.next_cron_slot('* * * * *', %s, now())",
            ("Mars/Olympus",),
            'unknown time zone "Mars/Olympus": give an IANA name such as Europe/Paris',
        ),
        (
            "SELECT skiplock.cron_slots('* * * * *', %s, now(), 5)",
            ("Mars/Olympus",),
            "unknown time zone",
        ),
        ("SELECT skiplock.next_cron_slot('* * * * *', %s, now())", (None,), "time zone is NULL"),
        (
            "SELECT skiplock.next_cron_slot('* * * * *', 'UTC', %s)",
            (None,),
            "after must be a finite time",
        ),
        (
            "SELECT skiplock.next_cron_slot('* * * * *', 'UTC', %s::timestamptz)",
            ("infinity",),
            "infinity",
        ),
        (
            "SELECT skiplock.cron_slots('* * * * *', 'UTC', now(), %s)",
            (1001,),
            "count must be 0 to 1000",
        ),
        (
            "SELECT skiplock.cron_slots('* * * * *', 'UTC', now(), %s)",
            (-1,),
            "count must be 0 to 1000",
        ),
    ],
)
def test_an_unknown_zone_or_a_bad_argument_raises_invalid_argument_error(
    conn: psycopg.Connection[Any], query: str, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(query, args)
    assert raised.value.sqlstate == "SL004"
    assert message in (raised.value.diag.message_primary or "")
    with pytest.raises(InvalidArgumentError) as mapped:
        raise_mapped(raised.value)
    assert not isinstance(mapped.value, InvalidCronError)


@pytest.mark.parametrize("zone", ["CEST", "cet", "WET", "UTC+3", "foo3"])
def test_abbreviations_and_posix_specs_are_refused(
    conn: psycopg.Connection[Any], zone: str
) -> None:
    """PostgreSQL reads them as fixed offsets: CEST is +02 all year, CET +01 though the tz
    database's CET keeps summer time, UTC+3 is 3 hours west of UTC."""
    with pytest.raises(psycopg.Error) as raised:
        conn.execute("SELECT skiplock.next_cron_slot('0 9 * * *', %s, now())", (zone,))
    assert raised.value.sqlstate == "SL004"
    assert f'time zone "{zone}" reads in PostgreSQL as a fixed offset' in str(raised.value)


def test_zone_names_without_a_slash_and_fixed_zones(conn: psycopg.Connection[Any]) -> None:
    after = datetime(2025, 7, 1, tzinfo=UTC)
    cases = [
        ("0 9 * * *", zone, after)
        for zone in ["Japan", "EST", "EST5EDT", "Etc/GMT-3", "europe/paris"]
    ]
    assert sql_slots(conn, cases, 1) == [
        [datetime(2025, 7, 2, 0, tzinfo=UTC)],  # 09:00 +09
        [datetime(2025, 7, 1, 14, tzinfo=UTC)],  # 09:00 -05 all year
        [datetime(2025, 7, 1, 13, tzinfo=UTC)],  # 09:00 EDT
        [datetime(2025, 7, 1, 6, tzinfo=UTC)],  # 09:00 +03 (Etc/GMT signs are POSIX's)
        [datetime(2025, 7, 1, 7, tzinfo=UTC)],  # 09:00 CEST
    ]


def test_slots_are_strictly_after_and_zero_slots_is_empty(conn: psycopg.Connection[Any]) -> None:
    on_slot = datetime(2025, 6, 1, 12, 15, tzinfo=UTC)
    [slots] = sql_slots(conn, [("*/15 * * * *", "UTC", on_slot)], 2)
    assert slots == [on_slot + timedelta(minutes=15), on_slot + timedelta(minutes=30)]
    row = conn.execute(
        "SELECT skiplock.next_cron_slot('*/15 * * * *', 'UTC', %s),"
        " skiplock.cron_slots('* * * * *', 'UTC', now(), 0)",
        (on_slot - timedelta(microseconds=1),),
    ).fetchone()
    assert row == (on_slot, [])


def test_volatility_and_parallel_safety(conn: psycopg.Connection[Any]) -> None:
    """parse_cron depends on its text alone; the rest read the time zone database, which
    an upgrade may change: STABLE. None writes: all parallel safe."""
    rows = dict(
        conn.execute(
            "SELECT p.proname, p.provolatile::text || p.proparallel::text FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'skiplock' AND (p.proname LIKE 'cron%%' OR p.proname IN"
            " ('parse_cron', 'next_cron_slot'))"
        ).fetchall()
    )
    assert rows == {
        "cron_invalid": "is",
        "cron_value": "is",
        "cron_field": "is",
        "parse_cron": "is",
        "cron_next_bit": "is",
        "cron_next_wall": "is",
        "cron_transition": "ss",
        "cron_slot_after": "ss",
        "cron_check_zone": "ss",
        "next_cron_slot": "ss",
        "cron_slots": "ss",
    }


# -- speed --------------------------------------------------------------------------------


def test_ten_thousand_next_slots_take_well_under_a_second_each_thousand(
    conn: psycopg.Connection[Any],
) -> None:
    """tick() calls next_cron_slot for each due schedule: 1,000 at once must leave most of a
    second for the rest. 10,000 calls of a few expressions in 4 zones, in one SELECT."""
    query = (
        "SELECT count(skiplock.next_cron_slot(e, z, timestamptz '2025-01-01' + i * interval '7m'))"
        " FROM generate_series(1, 625) i,"
        " unnest(array['*/15 * * * *', '0 9 * * 1-5', '30 2 1 * *', '0 0 29 2 *']) e,"
        " unnest(array['UTC', 'Europe/Paris', 'America/New_York', 'Australia/Lord_Howe']) z"
    )
    conn.execute("SET jit = off")  # what a PL/pgSQL caller gets: a plan under JIT's cost line
    conn.execute(query)  # warm the session's caches
    began = time.perf_counter()
    assert conn.execute(query).fetchone() == (10000,)
    per_call = (time.perf_counter() - began) / 10000
    print(f"next_cron_slot: {per_call * 1e6:.1f} us per call")
    assert per_call < 200e-6
