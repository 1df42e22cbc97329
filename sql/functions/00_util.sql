-- Shared helpers: the clock, ids, status classes.

-- now: the engine's clock. Every deadline reads it, never a worker's clock.
-- Tests fake it per session with set_config('skiplock.fake_now', '<timestamptz>', false).
CREATE OR REPLACE FUNCTION skiplock.now() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT coalesce(nullif(current_setting('skiplock.fake_now', true), '')::timestamptz,
                    pg_catalog.now())
$$;

-- clock: the time now, not at the start of the transaction: for timestamps that must
-- follow a decision made earlier in the same transaction (an attempt starts after its
-- admission counted the slot holders, so the attempts of a queue never seem to overlap
-- beyond its limit). Honours the fake clock like now().
CREATE OR REPLACE FUNCTION skiplock.clock() RETURNS timestamptz
LANGUAGE sql VOLATILE AS $$
    SELECT coalesce(nullif(current_setting('skiplock.fake_now', true), '')::timestamptz,
                    clock_timestamp())
$$;

-- gen_id: '<prefix>_' || 12 hex digits of milliseconds || 4 hex digits of a cycling
-- counter || 16 random hex digits. Ids sort by creation time (to the millisecond, then by
-- the counter, so one session's ids keep their order), which cursor pagination relies on.
-- The time and the database-wide counter make ids unique (short of 65,536 ids in one
-- millisecond); the random digits are a second guard, not a secret, so random() (seeded
-- per session from a strong source) does: 0.3 us, where formatting gen_random_uuid()
-- took 3.6 of gen_id's 4.9 us, paid once per run and once per attempt.
CREATE OR REPLACE FUNCTION skiplock.gen_id(p_prefix text) RETURNS text
LANGUAGE sql VOLATILE AS $$
    SELECT p_prefix || '_'
        || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
        || lpad(to_hex(nextval('skiplock.id_seq')), 4, '0')
        || lpad(to_hex((random() * 9223372036854775807)::bigint), 16, '0')
$$;

-- is_final: statuses a run never leaves.
CREATE OR REPLACE FUNCTION skiplock.is_final(p_status skiplock.run_status) RETURNS boolean
LANGUAGE sql IMMUTABLE AS $$
    SELECT p_status IN ('COMPLETED', 'CANCELED', 'FAILED', 'TIMED_OUT', 'CRASHED',
                        'SYSTEM_FAILURE', 'EXPIRED')
$$;

-- invalid: raise the typed "invalid argument" error (SL004), mapped in engine/errors.py.
CREATE OR REPLACE FUNCTION skiplock.invalid(p_message text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SL004', MESSAGE = p_message;
END;
$$;

-- unknown_keys_problem: NULL when every key of the JSON object p_obj is one of p_known;
-- else the SL004 message for it, naming the unknown keys and listing the valid ones
-- ("unknown trigger option(s): delay; valid: ..."), p_what naming what the keys are.
-- Callers test `p_obj - p_known <> '{}'` first (no query, ~0.3 us) and call this only
-- for bad input; p_obj must be an object.
CREATE OR REPLACE FUNCTION skiplock.unknown_keys_problem(p_obj jsonb, p_known text[], p_what text)
RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT format('unknown %s(s): %s; valid: %s', p_what, string_agg(k, ', ' ORDER BY k),
                  array_to_string(p_known, ', '))
      FROM jsonb_object_keys(p_obj - p_known) k
    HAVING count(*) > 0
$$;

-- check_keys: SL004 unless p_obj is a JSON object whose keys are all in p_known: "<p_noun>
-- must be a JSON object", or unknown_keys_problem's message, p_what naming the keys.
CREATE OR REPLACE FUNCTION skiplock.check_keys(
    p_obj jsonb, p_known text[], p_noun text, p_what text)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF jsonb_typeof(p_obj) IS DISTINCT FROM 'object' THEN
        PERFORM skiplock.invalid(p_noun || ' must be a JSON object');
    END IF;
    IF p_obj - p_known <> '{}' THEN
        PERFORM skiplock.invalid(skiplock.unknown_keys_problem(p_obj, p_known, p_what));
    END IF;
END;
$$;

-- run_for_update: lock a run row, or raise SL001 when there is no such run.
CREATE OR REPLACE FUNCTION skiplock.run_for_update(p_run_id text) RETURNS skiplock.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT * INTO v_run FROM skiplock.runs WHERE id = p_run_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001', MESSAGE = format('run %s does not exist', p_run_id);
    END IF;
    RETURN v_run;
END;
$$;
