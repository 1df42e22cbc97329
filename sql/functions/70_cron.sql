-- Cron: parse standard 5-field cron expressions and find their slots in a time zone, for
-- schedules. tests/test_cron.py checks the slots against cronsim (healthchecks.io's Python
-- evaluator, which follows Debian cron), DST transitions included, and where cronsim is
-- off (see cron_slot_after) against the rule written out in Python.

-- cron_invalid: raise the typed "invalid cron expression" error (SL008, InvalidCronError
-- in engine/errors.py) with the expression as given and what is wrong with it.
CREATE OR REPLACE FUNCTION skiplock.cron_invalid(p_cron text, p_problem text) RETURNS void
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SL008', MESSAGE = CASE
        WHEN p_cron IS NULL THEN 'invalid cron expression: ' || p_problem
        ELSE format('invalid cron expression "%s": %s', p_cron, p_problem) END;
END;
$$;

-- cron_value: one value of field p_field (1 minute, 2 hour, 3 day-of-month, 4 month,
-- 5 day-of-week) of field text p_text: a number in the field's range, or a month (JAN-DEC)
-- or day (SUN-SAT) name in those fields, in any case. SL008 naming the field otherwise.
-- cron_field reads plain numbers itself: this is the slow path, names and errors.
CREATE OR REPLACE FUNCTION skiplock.cron_value(p_cron text, p_field integer, p_text text,
                                               p_token text)
RETURNS integer
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_name text := (ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'])[p_field];
    v_low  integer := (ARRAY[0, 0, 1, 1, 0])[p_field];
    v_high integer := (ARRAY[59, 23, 31, 12, 7])[p_field];
    v_at   integer;
BEGIN
    IF p_token !~ '^[A-Za-z0-9]+$' THEN
        PERFORM skiplock.cron_invalid(p_cron, format(
            '%s "%s" is not valid: expected *, a value or a range a-b, each with an '
            'optional /step, or a comma list of those', v_name, p_text));
    ELSIF p_token ~ '^[0-9]+$' THEN
        IF length(p_token) <= 4 AND p_token::integer BETWEEN v_low AND v_high THEN
            RETURN p_token::integer;
        END IF;
        PERFORM skiplock.cron_invalid(p_cron,
            format('%s %s is out of range %s-%s', v_name, p_token, v_low, v_high));
    ELSIF p_field = 4 THEN
        v_at := strpos('janfebmaraprmayjunjulaugsepoctnovdec', lower(p_token));
        IF length(p_token) = 3 AND v_at % 3 = 1 THEN
            RETURN (v_at + 2) / 3;
        END IF;
        PERFORM skiplock.cron_invalid(p_cron,
            format('month "%s" is not a number (1-12) or a month name (JAN-DEC)', p_token));
    ELSIF p_field = 5 THEN
        v_at := strpos('sunmontuewedthufrisat', lower(p_token));
        IF length(p_token) = 3 AND v_at % 3 = 1 THEN
            RETURN (v_at - 1) / 3;
        END IF;
        PERFORM skiplock.cron_invalid(p_cron,
            format('day-of-week "%s" is not a number (0-7) or a day name (SUN-SAT)', p_token));
    END IF;
    PERFORM skiplock.cron_invalid(p_cron,
        format('%s "%s" is not a number (%s-%s)', v_name, p_token, v_low, v_high));
    RETURN NULL;  -- not reached
END;
$$;

-- cron_field: the bit mask of one field (bit n set when value n is allowed): a comma list
-- of terms, each *, a value or a range a-b, with an optional /step (a/step runs from a to
-- the field's end, as in Vixie cron). A step must be able to reach a second value of the
-- field (1-59 for minutes, 1-23 for hours, 1-30, 1-11, 1-7): */90 is an error here, not
-- silently */60, which cronsim and Vixie cron take as "minute 0".
-- Day-of-week 7 is Sunday, folded into bit 0. No regular expression on the way of a valid
-- field: a regexp_match a term made parse_cron 3 times slower (now about 8 us).
CREATE OR REPLACE FUNCTION skiplock.cron_field(p_cron text, p_field integer, p_text text)
RETURNS bigint
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_low   integer := (ARRAY[0, 0, 1, 1, 0])[p_field];
    v_high  integer := (ARRAY[59, 23, 31, 12, 7])[p_field];
    v_mask  bigint := 0;
    v_term  text;
    v_token text;
    v_at    integer;
    v_from  integer;
    v_to    integer;
    v_step  integer;
    v_bits  bigint;
BEGIN
    IF p_text = '*' THEN  -- the common case first
        RETURN CASE WHEN p_field = 5 THEN 127 ELSE (2::bigint << v_high) - (1::bigint << v_low) END;
    END IF;
    FOREACH v_term IN ARRAY string_to_array(p_text, ',') LOOP
        v_step := NULL;
        v_at := strpos(v_term, '/');
        IF v_at > 0 THEN
            v_token := substr(v_term, v_at + 1);
            v_term := left(v_term, v_at - 1);
            IF v_token = '' OR translate(v_token, '0123456789', '') <> '' THEN
                PERFORM skiplock.cron_invalid(p_cron, format('%s step "%s" is not a number',
                    (ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'])[p_field],
                    v_token));
            ELSIF (CASE WHEN length(v_token) > 4 THEN true
                        ELSE v_token::integer NOT BETWEEN 1 AND v_high - v_low END) THEN
                PERFORM skiplock.cron_invalid(p_cron, format('%s step %s is out of range 1-%s',
                    (ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'])[p_field],
                    v_token, v_high - v_low));
            END IF;
            v_step := v_token::integer;
        END IF;
        IF v_term = '*' THEN
            v_from := v_low;
            v_to := v_high;
        ELSE
            v_at := strpos(v_term, '-');
            v_token := CASE WHEN v_at > 0 THEN left(v_term, v_at - 1) ELSE v_term END;
            v_from := CASE WHEN length(v_token) BETWEEN 1 AND 2
                            AND translate(v_token, '0123456789', '') = '' THEN v_token::integer END;
            IF v_from IS NULL OR v_from NOT BETWEEN v_low AND v_high THEN
                v_from := skiplock.cron_value(p_cron, p_field, p_text, v_token);
            END IF;
            IF v_at > 0 THEN
                v_token := substr(v_term, v_at + 1);
                v_to := CASE WHEN length(v_token) BETWEEN 1 AND 2
                              AND translate(v_token, '0123456789', '') = '' THEN v_token::integer END;
                IF v_to IS NULL OR v_to NOT BETWEEN v_low AND v_high THEN
                    v_to := skiplock.cron_value(p_cron, p_field, p_text, v_token);
                END IF;
                IF v_to < v_from THEN
                    PERFORM skiplock.cron_invalid(p_cron, format(
                        '%s range %s runs backwards (write it as two ranges, up to %s and from %s)',
                        (ARRAY['minute', 'hour', 'day-of-month', 'month', 'day-of-week'])[p_field],
                        v_term, v_high, v_low));
                END IF;
            ELSE
                v_to := CASE WHEN v_step IS NULL THEN v_from ELSE v_high END;
            END IF;
        END IF;
        -- every v_step-th bit from 0, doubled up to the span, then moved to v_from and cut
        -- at v_to (bits shifted past 63 fall off)
        v_bits := 1;
        v_at := coalesce(v_step, 1);
        WHILE v_at <= v_to - v_from LOOP
            v_bits := v_bits | (v_bits << v_at);
            v_at := v_at * 2;
        END LOOP;
        v_mask := v_mask | ((v_bits << v_from) & ((2::bigint << v_to) - (1::bigint << v_from)));
    END LOOP;
    IF p_field = 5 AND v_mask & 128 <> 0 THEN
        v_mask := (v_mask | 1) & 127;
    END IF;
    RETURN v_mask;
END;
$$;

-- parse_cron: the parsed form of a cron expression, or SL008 saying what is wrong with it.
-- The standard 5 fields, minute hour day-of-month month day-of-week, separated by spaces:
-- *, values, ranges a-b, steps */n, a-b/n and a/n, comma lists; month names JAN-DEC and
-- day names SUN-SAT in any case; day-of-week 0-7, 0 and 7 both Sunday. The nicknames:
-- @yearly and @annually (0 0 1 1 *), @monthly (0 0 1 * *), @weekly (0 0 * * 0), @daily and
-- @midnight (0 0 * * *), @hourly (0 * * * *). Not supported: a seconds field, L, W, #, ?,
-- @reboot.
-- The parsed form is bigint[6]: five bit masks, bit n set when value n is allowed (minute
-- 0-59, hour 0-23, day-of-month 1-31, month 1-12, day-of-week 0-6 with Sunday 0), then
-- flags, as Vixie cron and cronsim read the fields:
--   1: both day fields are restricted (neither starts with *): a day matches when its
--      day-of-month or its day-of-week does (0 0 1 * MON: the 1st and every Monday);
--      without it a day must match both (0 0 */2 * MON: odd days that are Mondays).
--   2: neither minute nor hour starts with *: the expression names times of day, and
--      daylight saving moves them on the wall clock (see cron_slot_after).
-- An expression no date matches raises SL008 too ("0 0 30 2 *"). Exact and cheap: without
-- flag 1 it is when no allowed month has the smallest allowed day (February counts 29,
-- and every date falls on every weekday within 40 years); with flag 1 the day-of-week
-- alone matches days in every month.
CREATE OR REPLACE FUNCTION skiplock.parse_cron(p_cron text) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_text   text := btrim(p_cron, E' \t\n\r\f' || chr(11));
    v_fields text[];
    v_parsed bigint[];
    v_flags  bigint := 0;
    v_days   integer;
BEGIN
    IF p_cron IS NULL THEN
        PERFORM skiplock.cron_invalid(NULL, 'it is NULL');
    END IF;
    IF v_text LIKE '@%' THEN
        v_text := CASE lower(v_text)
            WHEN '@yearly' THEN '0 0 1 1 *' WHEN '@annually' THEN '0 0 1 1 *'
            WHEN '@monthly' THEN '0 0 1 * *' WHEN '@weekly' THEN '0 0 * * 0'
            WHEN '@daily' THEN '0 0 * * *' WHEN '@midnight' THEN '0 0 * * *'
            WHEN '@hourly' THEN '0 * * * *' END;
        IF v_text IS NULL THEN
            PERFORM skiplock.cron_invalid(p_cron, 'unknown nickname: use @yearly, @annually, '
                '@monthly, @weekly, @daily, @midnight or @hourly, or 5 fields');
        END IF;
    END IF;
    v_fields := CASE WHEN v_text = '' THEN '{}'
                     -- single spaces, the common case, without a regular expression
                     WHEN strpos(v_text, '  ') = 0
                          AND translate(v_text, E'\t\n\r\f' || chr(11), '') = v_text
                     THEN string_to_array(v_text, ' ')
                     ELSE regexp_split_to_array(v_text, '\s+') END;
    IF cardinality(v_fields) <> 5 THEN
        PERFORM skiplock.cron_invalid(p_cron, format('expected 5 fields (minute hour '
            'day-of-month month day-of-week) or a nickname such as @daily, got %s',
            cardinality(v_fields)));
    END IF;
    v_parsed := ARRAY[skiplock.cron_field(p_cron, 1, v_fields[1]),
                      skiplock.cron_field(p_cron, 2, v_fields[2]),
                      skiplock.cron_field(p_cron, 3, v_fields[3]),
                      skiplock.cron_field(p_cron, 4, v_fields[4]),
                      skiplock.cron_field(p_cron, 5, v_fields[5])];
    IF v_fields[3] NOT LIKE '*%' AND v_fields[5] NOT LIKE '*%' THEN
        v_flags := v_flags | 1;
    ELSE
        -- the longest allowed month, and the smallest allowed day
        v_days := CASE WHEN v_parsed[4] & 5546 <> 0 THEN 31    -- Jan Mar May Jul Aug Oct Dec
                       WHEN v_parsed[4] & 2640 <> 0 THEN 30    -- Apr Jun Sep Nov
                       ELSE 29 END;
        IF v_parsed[3] & ((2::bigint << v_days) - 2) = 0 THEN
            PERFORM skiplock.cron_invalid(p_cron, format('it never matches: no month it allows '
                'has a day %s', skiplock.cron_next_bit(v_parsed[3], 1)));
        END IF;
    END IF;
    IF v_fields[1] NOT LIKE '*%' AND v_fields[2] NOT LIKE '*%' THEN
        v_flags := v_flags | 2;
    END IF;
    RETURN v_parsed || v_flags;
END;
$$;

-- cron_next_bit: the lowest set bit of p_mask at or above bit p_from (0-62), or NULL: the
-- next allowed value of a field. SQL, so that it is inlined where it is called.
CREATE OR REPLACE FUNCTION skiplock.cron_next_bit(p_mask bigint, p_from integer) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_mask & -(1::bigint << p_from) <> 0
        -- the index of the lowest bit, isolated (x & -x), from its logarithm: exact for the
        -- powers of 2 to 2^62 once rounded
        THEN (ln(((p_mask & -(1::bigint << p_from)) & -(p_mask & -(1::bigint << p_from)))::float8)
              / ln(2::float8))::integer END
$$;

-- cron_next_wall: the first wall-clock minute strictly after p_after that p_parsed matches,
-- on the plain calendar (no time zone). It skips whole months, days and hours that cannot
-- match, with the bit masks, rather than walking minute by minute: a few passes of the loop
-- for most expressions, two a year for the rarest ("0 0 29 2 */7", the leap day when it is
-- a Sunday: 2032, 2060, 2088, then 2128).
-- SL008 past 100 years: unreachable for what parse_cron accepts (its own check).
CREATE OR REPLACE FUNCTION skiplock.cron_next_wall(p_parsed bigint[], p_after timestamp)
RETURNS timestamp
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_t      timestamp := date_trunc('minute', p_after) + interval '1 minute';
    v_year   integer := date_part('year', v_t);
    v_month  integer := date_part('month', v_t);
    v_day    integer := date_part('day', v_t);
    v_hour   integer := date_part('hour', v_t);
    v_minute integer := date_part('minute', v_t);
    v_limit  integer := v_year + 100;
    v_days   bigint;           -- the days of v_month that match, as a mask
    v_for    integer := -1;    -- the month v_days is for, year * 12 + month
    v_week   bigint;           -- the matching weekdays, bit k for the weekday of day k + 1
    v_first  integer;          -- the weekday of the 1st
    v_next   integer;
BEGIN
    LOOP
        v_next := skiplock.cron_next_bit(p_parsed[4], v_month);
        IF v_next IS NULL THEN
            v_year := v_year + 1;
            v_month := skiplock.cron_next_bit(p_parsed[4], 1);
            v_day := 1; v_hour := 0; v_minute := 0;
            IF v_year > v_limit THEN
                PERFORM skiplock.cron_invalid(NULL, 'it matches no date in 100 years');
            END IF;
        ELSIF v_next <> v_month THEN
            v_month := v_next;
            v_day := 1; v_hour := 0; v_minute := 0;
        END IF;
        IF v_for <> v_year * 12 + v_month THEN
            v_for := v_year * 12 + v_month;
            v_first := date_part('dow', make_date(v_year, v_month, 1));
            v_week := ((p_parsed[5] >> v_first) | (p_parsed[5] << (7 - v_first))) & 127;
            -- (PostgreSQL gives | and << the same precedence, left to right)
            v_days := (v_week | (v_week << 7) | (v_week << 14) | (v_week << 21) | (v_week << 28))
                      << 1;
            v_days := CASE WHEN p_parsed[6] & 1 <> 0 THEN p_parsed[3] | v_days
                           ELSE p_parsed[3] & v_days END
                      -- the days the month has: 31 in Jan Mar May Jul, Aug Oct Dec
                      & ((2::bigint << CASE WHEN v_month <> 2 THEN 30 + (v_month + v_month / 8) % 2
                                            WHEN v_year % 4 = 0 AND (v_year % 100 <> 0
                                                 OR v_year % 400 = 0) THEN 29
                                            ELSE 28 END) - 2);
        END IF;
        v_next := skiplock.cron_next_bit(v_days, v_day);
        IF v_next IS NULL THEN
            v_month := v_month + 1;  -- 13 is next year's turn, above
            v_day := 1; v_hour := 0; v_minute := 0;
            CONTINUE;
        ELSIF v_next <> v_day THEN
            v_day := v_next;
            v_hour := 0; v_minute := 0;
        END IF;
        v_next := skiplock.cron_next_bit(p_parsed[2], v_hour);
        IF v_next IS NULL THEN
            v_day := v_day + 1;  -- past the month's end is the next month's turn, above
            v_hour := 0; v_minute := 0;
            CONTINUE;
        ELSIF v_next <> v_hour THEN
            v_hour := v_next;
            v_minute := 0;
        END IF;
        v_next := skiplock.cron_next_bit(p_parsed[1], v_minute);
        IF v_next IS NULL THEN
            v_hour := v_hour + 1;  -- 24 is the next day's turn, above
            v_minute := 0;
            CONTINUE;
        END IF;
        RETURN make_timestamp(v_year, v_month, v_day, v_hour, v_next, 0);
    END LOOP;
END;
$$;

-- cron_transition: where p_tz's clock jumps between p_from and p_to, which must have
-- different UTC offsets with one change between them: the first instant after p_from
-- with p_to's offset, to the second (tz database transitions are whole seconds).
-- A bisection, 13 steps for a 2-hour window; called only near transitions.
CREATE OR REPLACE FUNCTION skiplock.cron_transition(p_tz text, p_from timestamptz,
                                                    p_to timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    v_lo     double precision := floor(date_part('epoch', p_from));
    v_hi     double precision := ceil(date_part('epoch', p_to));
    v_mid    double precision;
    v_offset interval := (p_to AT TIME ZONE p_tz) - (p_to AT TIME ZONE 'UTC');
BEGIN
    WHILE v_hi - v_lo > 1 LOOP
        v_mid := floor((v_lo + v_hi) / 2);
        IF (to_timestamp(v_mid) AT TIME ZONE p_tz) - (to_timestamp(v_mid) AT TIME ZONE 'UTC')
           = v_offset THEN
            v_hi := v_mid;
        ELSE
            v_lo := v_mid;
        END IF;
    END LOOP;
    RETURN to_timestamp(v_hi);
END;
$$;

-- cron_slot_after: the first slot of p_parsed strictly after p_after, on the wall clock of
-- time zone p_tz (not checked here: next_cron_slot and cron_slots check it). A slot is a
-- wall-clock minute the expression matches, read in p_tz; daylight saving decides which
-- instants those are, as Debian cron (and cronsim) do:
--  * Times of day (flag 2: neither minute nor hour starts with *, as in "30 2 * * *"):
--    each matching minute fires once, at the first instant the wall clock reads it or
--    later. A minute skipped by a spring-forward fires at the transition (02:30 in
--    Europe/Paris on the last Sunday of March fires at 03:00 CEST, 01:00 UTC; 02:00 and
--    02:30 both fall there and fire once). A minute the wall clock reads twice at a
--    fall-back fires at the first reading only (01:30 in America/New_York on the first
--    Sunday of November fires at 01:30 EDT, 05:30 UTC, not again at 01:30 EST).
--  * Otherwise (minute or hour starts with *, as in "*/15 * * * *" or "0 * * * *"), the
--    slots are every instant whose wall-clock reading matches: minutes skipped by a
--    spring-forward do not fire, minutes read twice at a fall-back fire twice, an hour
--    apart. Such schedules stay evenly spaced in real time across transitions.
-- cronsim says the same but where it is off (tests/test_cron.py shows each): where clocks
-- move by 30 minutes (Australia/Lord_Howe) it misses or shifts slots of the second kind
-- around the transition; on a day whose midnight is skipped (America/Santiago) it may
-- fire the second kind at the day's first instant, outside the hours it names; from an
-- instant inside a repeated hour it may return a time of day before that instant.
-- Near no transition, one reading of the next matching wall-clock minute: 4 zone
-- conversions and one cron_next_wall. Transitions are found where they matter, by
-- cron_transition. Assumes a zone's offset changes at most once within 28 hours (in the
-- tz database since 1970, changes are 7 days apart at the least).
CREATE OR REPLACE FUNCTION skiplock.cron_slot_after(p_parsed bigint[], p_tz text,
                                                    p_after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    v_times  boolean := p_parsed[6] & 2 <> 0;
    v_wall   timestamp := p_after AT TIME ZONE p_tz;  -- search wall-clock minutes after it
    v_n      timestamp;     -- a wall-clock minute the expression matches
    v_u      timestamptz;   -- v_n read as UTC
    v_before interval;      -- the zone's offset 15 hours before v_u, and
    v_after  interval;      -- 13 hours after: the readings of v_n lie between (-12 to +14)
    v_early  timestamptz;   -- v_n read at v_before's offset, if the clock reads v_n then
    v_late   timestamptz;   -- and at v_after's
    v_shift  timestamptz;   -- a transition
    v_repeat timestamptz;   -- a slot in the repeat of the hour p_after is in, see below
BEGIN
    IF NOT v_times THEN
        -- p_after in an hour the clock is about to read again (01:20 EDT, before New York
        -- falls back from 02:00 EDT to 01:00 EST): the first slot may be in the repeat
        -- (01:00 EST for "*/15 * * * *"), on wall-clock minutes not after v_wall.
        v_u := v_wall AT TIME ZONE 'UTC';
        v_before := ((v_u - interval '15 hours') AT TIME ZONE p_tz) - (v_wall - interval '15 hours');
        v_after := ((v_u + interval '13 hours') AT TIME ZONE p_tz) - (v_wall + interval '13 hours');
        IF v_after < v_before THEN
            v_late := v_u - v_after;
            IF v_late > p_after AND (v_late AT TIME ZONE p_tz) = v_wall THEN
                v_shift := skiplock.cron_transition(p_tz, p_after, v_late);
                v_n := skiplock.cron_next_wall(
                    p_parsed, (v_shift AT TIME ZONE p_tz) - interval '1 microsecond');
                IF v_n < (v_shift AT TIME ZONE p_tz) + (v_before - v_after) THEN
                    v_repeat := (v_n AT TIME ZONE 'UTC') - v_after;
                END IF;
            END IF;
        END IF;
    END IF;
    FOR v_pass IN 1..100 LOOP
        v_n := skiplock.cron_next_wall(p_parsed, v_wall);
        v_u := v_n AT TIME ZONE 'UTC';
        v_before := ((v_u - interval '15 hours') AT TIME ZONE p_tz) - (v_n - interval '15 hours');
        v_after := ((v_u + interval '13 hours') AT TIME ZONE p_tz) - (v_n + interval '13 hours');
        v_early := v_u - v_before;
        IF v_before = v_after THEN  -- no transition near: the one reading of v_n
            IF v_early > p_after THEN
                RETURN least(v_early, v_repeat);
            END IF;
            v_wall := v_n;
            CONTINUE;
        END IF;
        v_late := v_u - v_after;
        IF (v_early AT TIME ZONE p_tz) <> v_n THEN
            v_early := NULL;
        END IF;
        IF (v_late AT TIME ZONE p_tz) <> v_n THEN
            v_late := NULL;
        END IF;
        IF v_early IS NULL AND v_late IS NULL THEN
            -- the clock skips v_n (spring forward): times of day fire at the transition,
            -- the rest skip to the first minute after the jump
            v_shift := skiplock.cron_transition(p_tz, v_u - v_after, v_u - v_before);
            IF v_times THEN
                RETURN v_shift;
            END IF;
            v_wall := (v_shift AT TIME ZONE p_tz) - interval '1 microsecond';
            CONTINUE;
        END IF;
        v_early := coalesce(v_early, v_late);
        v_late := coalesce(v_late, v_early);
        IF v_early > p_after THEN
            RETURN least(v_early, v_repeat);
        ELSIF v_late > p_after AND NOT v_times THEN
            RETURN least(v_late, v_repeat);
        ELSIF v_late > v_early THEN
            -- a time of day in the repeat of a fall-back, which fired at its first
            -- reading: go on from the end of the repeat (from 02:00 EDT's reading)
            v_shift := skiplock.cron_transition(p_tz, v_early, v_late);
            v_wall := (v_shift AT TIME ZONE 'UTC') + v_before - interval '1 microsecond';
        ELSE
            v_wall := v_n;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'cron_slot_after: no slot found after % in %', p_after, p_tz;
END;
$$;

-- cron_check_zone: SL004 unless p_tz names a time zone of the tz database (an IANA name
-- such as Europe/Paris) and PostgreSQL reads it as that zone. PostgreSQL also takes time
-- zone abbreviations and POSIX specs, which it reads as fixed offsets without daylight
-- saving ("CEST", "UTC+3", which it reads as 3 hours west of UTC); and it reads "CET",
-- "EET", "MET" and "WET", which are zones with daylight saving in the tz database, as the
-- fixed offsets of their abbreviations. All of them are refused. The check costs nothing
-- for a name with a slash, and one read of pg_timezone_abbrevs (about 0.1 ms) for one
-- without, such as Japan or EST5EDT, but UTC.
CREATE OR REPLACE FUNCTION skiplock.cron_check_zone(p_tz text) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
BEGIN
    IF p_tz IS NULL THEN
        PERFORM skiplock.invalid('time zone is NULL: give an IANA name such as Europe/Paris');
    END IF;
    IF p_tz = 'UTC' THEN
        RETURN;
    END IF;
    BEGIN
        PERFORM now() AT TIME ZONE p_tz;
    EXCEPTION WHEN invalid_parameter_value THEN
        PERFORM skiplock.invalid(format('unknown time zone "%s": give an IANA name such as '
                                        'Europe/Paris or UTC', p_tz));
    END;
    IF strpos(p_tz, '/') = 0 AND (
        -- a POSIX spec has a digit; these zones too
        (translate(p_tz, '0123456789', '') <> p_tz
         AND upper(p_tz) NOT IN ('EST5EDT', 'CST6CDT', 'MST7MDT', 'PST8PDT', 'GMT0', 'GMT+0',
                                 'GMT-0'))
        -- an abbreviation, but for the zones that are the same fixed offset
        OR (upper(p_tz) NOT IN ('EST', 'GMT', 'HST', 'MST', 'UCT', 'ZULU')
            AND EXISTS (SELECT 1 FROM pg_timezone_abbrevs a WHERE lower(a.abbrev) = lower(p_tz))))
    THEN
        PERFORM skiplock.invalid(format('time zone "%s" reads in PostgreSQL as a fixed offset '
            'without daylight saving (an abbreviation or a POSIX spec): give an IANA name such '
            'as Europe/Paris, or UTC', p_tz));
    END IF;
END;
$$;

-- next_cron_slot: the first slot of cron expression p_cron strictly after p_after, on the
-- wall clock of time zone p_tz; daylight saving as cron_slot_after describes.
-- SL008 for an invalid expression, SL004 for an unknown zone or a NULL or infinite
-- p_after. About 20 us a call, 8 of them parsing p_cron (10,000 calls of 4 expressions in
-- 4 zones in one SELECT, PostgreSQL 18; tests/test_cron.py's speed test prints it): 1,000
-- due schedules cost tick() some 20 ms here. A caller that keeps parse_cron's result can
-- call cron_slot_after itself (its zone checked once, by cron_check_zone).
CREATE OR REPLACE FUNCTION skiplock.next_cron_slot(p_cron text, p_tz text, p_after timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    v_parsed bigint[] := skiplock.parse_cron(p_cron);
BEGIN
    PERFORM skiplock.cron_check_zone(p_tz);
    IF NOT isfinite(p_after) OR p_after IS NULL THEN
        PERFORM skiplock.invalid(format('after must be a finite time, got %s',
                                        coalesce(p_after::text, 'NULL')));
    END IF;
    RETURN skiplock.cron_slot_after(v_parsed, p_tz, p_after);
END;
$$;

-- cron_slots: the next p_count (0 to 1000) slots of p_cron after p_after in p_tz, in order,
-- each the next_cron_slot of the one before: a scheduled payload's `upcoming`, and the
-- dashboard's. Errors as next_cron_slot's.
CREATE OR REPLACE FUNCTION skiplock.cron_slots(p_cron text, p_tz text, p_after timestamptz,
                                               p_count integer)
RETURNS timestamptz[]
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    v_parsed bigint[] := skiplock.parse_cron(p_cron);
    v_slots  timestamptz[] := '{}';
    v_at     timestamptz := p_after;
BEGIN
    PERFORM skiplock.cron_check_zone(p_tz);
    IF NOT isfinite(p_after) OR p_after IS NULL THEN
        PERFORM skiplock.invalid(format('after must be a finite time, got %s',
                                        coalesce(p_after::text, 'NULL')));
    END IF;
    IF p_count IS NULL OR p_count NOT BETWEEN 0 AND 1000 THEN
        PERFORM skiplock.invalid(format('count must be 0 to 1000, got %s',
                                        coalesce(p_count::text, 'NULL')));
    END IF;
    FOR v_i IN 1..p_count LOOP
        v_at := skiplock.cron_slot_after(v_parsed, p_tz, v_at);
        v_slots := array_append(v_slots, v_at);
    END LOOP;
    RETURN v_slots;
END;
$$;
