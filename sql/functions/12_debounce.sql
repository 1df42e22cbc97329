-- Debounce: triggers with one key, close together, make one run.

-- debounce_trigger: trigger() with the option "debounce": {"key", "delay" (s), "mode"
-- ('trailing' | 'leading'), "max_delay" (s, optional)}. Triggers of p_task with the same
-- key join one run:
--   trailing: the run waits (DELAYED) until the key has been quiet for `delay`, then runs
--     with the payload of the last trigger; never later than max_delay after the first.
--   leading: the first trigger's run starts at once; the triggers that follow within
--     `delay` of the one before (and within max_delay of the first) join it and their
--     payloads are dropped.
-- Each returns the run it joined (is_cached true) or made. Concurrent triggers with one
-- key serialise on its debounces row, so a burst from many processes makes one run.
-- Locks: the debounces row of (p_task, key); the joined run.
CREATE OR REPLACE FUNCTION skiplock.debounce_trigger(p_task text, p_payload jsonb, p_options jsonb)
RETURNS TABLE (run_id text, run_status skiplock.run_status, is_cached boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := skiplock.now();
    c_keys  CONSTANT text[] := ARRAY['key', 'delay', 'mode', 'max_delay'];
    v_spec  jsonb := p_options->'debounce';
    v_key   text := v_spec->>'key';
    v_mode  text := coalesce(v_spec->>'mode', 'trailing');
    v_delay double precision;
    v_max   double precision;
    v_d     skiplock.debounces;
    v_run   skiplock.runs;
    v_until timestamptz;
    v_made  record;
BEGIN
    IF jsonb_typeof(v_spec) IS DISTINCT FROM 'object'
       OR jsonb_typeof(v_spec->'key') IS DISTINCT FROM 'string'
       OR jsonb_typeof(v_spec->'delay') IS DISTINCT FROM 'number'
       OR jsonb_typeof(v_spec->'max_delay') NOT IN ('number', 'null') THEN
        PERFORM skiplock.invalid('debounce must be {"key": text, "delay": seconds, '
                                 '"mode": "trailing" | "leading", "max_delay": seconds}');
    END IF;
    IF v_spec - c_keys <> '{}' THEN  -- a misspelt key ("max_wait") is not ignored
        PERFORM skiplock.invalid(skiplock.unknown_keys_problem(v_spec, c_keys, 'debounce option'));
    END IF;
    v_delay := (v_spec->>'delay')::double precision;
    v_max := (v_spec->>'max_delay')::double precision;
    IF length(v_key) NOT BETWEEN 1 AND 256 THEN
        PERFORM skiplock.invalid('debounce key must be 1 to 256 characters');
    ELSIF v_mode NOT IN ('trailing', 'leading') THEN
        PERFORM skiplock.invalid(format('debounce mode must be trailing or leading, got %s', v_mode));
    ELSIF v_delay <= 0 THEN
        PERFORM skiplock.invalid('debounce delay must be positive');
    ELSIF v_max < v_delay THEN
        PERFORM skiplock.invalid('debounce max_delay must be at least its delay');
    ELSIF p_options ?| ARRAY['delay_seconds', 'delay_until', 'idempotency_key'] THEN
        PERFORM skiplock.invalid('debounce cannot be combined with delay or idempotency_key');
    END IF;

    -- one row per (task, key), made if absent; its lock serialises the key's triggers
    INSERT INTO skiplock.debounces AS d (task_identifier, key, run_id, mode, first_at, until_at)
    VALUES (p_task, v_key, '', v_mode, v_now, v_now)
    ON CONFLICT (task_identifier, key) DO NOTHING;
    SELECT * INTO v_d FROM skiplock.debounces d
     WHERE d.task_identifier = p_task AND d.key = v_key FOR UPDATE;
    IF v_d.run_id <> '' THEN
        SELECT * INTO v_run FROM skiplock.runs r WHERE r.id = v_d.run_id FOR UPDATE;
    END IF;
    v_until := least(v_now + make_interval(secs => v_delay), coalesce(v_d.deadline, 'infinity'));

    IF v_run.id IS NOT NULL AND v_d.mode = 'trailing' AND v_run.delayed_until > v_now
       AND v_run.status IN ('DELAYED', 'PENDING_VERSION') THEN
        -- join the waiting run: the last payload wins, and the quiet period starts again
        UPDATE skiplock.runs r
           SET payload = p_payload, delayed_until = v_until, available_at = v_until,
               order_at = v_until - make_interval(secs => r.priority),
               expires_at = v_until + make_interval(secs => r.ttl), updated_at = v_now
         WHERE r.id = v_run.id;
        UPDATE skiplock.debounces d SET until_at = v_until, triggers = d.triggers + 1
         WHERE d.task_identifier = p_task AND d.key = v_key;
        PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
        RETURN QUERY SELECT v_run.id, v_run.status, true;
        RETURN;
    END IF;
    IF v_run.id IS NOT NULL AND v_d.mode = 'leading' AND v_d.until_at > v_now THEN
        UPDATE skiplock.debounces d SET until_at = v_until, triggers = d.triggers + 1
         WHERE d.task_identifier = p_task AND d.key = v_key;
        RETURN QUERY SELECT v_run.id, v_run.status, true;
        RETURN;
    END IF;

    -- a new run, and a new window
    SELECT * INTO v_made FROM skiplock.trigger(
        p_task, p_payload,
        (p_options - 'debounce') || CASE WHEN v_mode = 'trailing'
                                         THEN jsonb_build_object('delay_seconds', v_delay)
                                         ELSE '{}' END) t;
    UPDATE skiplock.debounces d
       SET run_id = v_made.run_id, mode = v_mode, first_at = v_now,
           until_at = v_now + make_interval(secs => v_delay),
           deadline = v_now + make_interval(secs => v_max), triggers = 1
     WHERE d.task_identifier = p_task AND d.key = v_key;
    RETURN QUERY SELECT v_made.run_id, v_made.run_status, false;
END;
$$;
