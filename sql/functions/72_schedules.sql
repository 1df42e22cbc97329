-- Schedules: cron tasks, created in code (DECLARATIVE, synced when a worker registers)
-- or through the API (IMPERATIVE), fired by tick() exactly once per slot. The cron
-- evaluator is 70_cron.sql.

-- iso_utc: p_at as ISO 8601 text in UTC ('2026-12-07T09:00:00Z'), as JSON payloads carry
-- instants (cron slots are whole minutes).
CREATE OR REPLACE FUNCTION skiplock.iso_utc(p_at timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- schedule_not_found: raise SL009 for schedule p_id.
CREATE OR REPLACE FUNCTION skiplock.schedule_not_found(p_id text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SL009', MESSAGE = format('schedule %s does not exist', p_id);
END;
$$;

-- schedule_for_update: schedule p_id, locked; SL009 when there is none.
CREATE OR REPLACE FUNCTION skiplock.schedule_for_update(p_id text) RETURNS skiplock.schedules
LANGUAGE plpgsql AS $$
DECLARE
    v skiplock.schedules;
BEGIN
    SELECT * INTO v FROM skiplock.schedules s WHERE s.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM skiplock.schedule_not_found(p_id);
    END IF;
    RETURN v;
END;
$$;

-- checked_schedule: p_s with its settings checked and its next slot (after p_now)
-- computed: SL004 for a bad task id, zone (next_cron_slot) or option; SL008 for a bad
-- cron expression (parse_cron).
CREATE OR REPLACE FUNCTION skiplock.checked_schedule(p_s skiplock.schedules, p_now timestamptz)
RETURNS skiplock.schedules
LANGUAGE plpgsql AS $$
BEGIN
    IF p_s.task_identifier IS NULL OR length(p_s.task_identifier) NOT BETWEEN 1 AND 256 THEN
        PERFORM skiplock.invalid('task id must be 1 to 256 characters');
    END IF;
    IF p_s.cron IS NULL THEN
        PERFORM skiplock.parse_cron(NULL);  -- its SL008
    END IF;
    IF p_s.timezone IS NULL OR p_s.timezone = '' THEN
        PERFORM skiplock.invalid('timezone must be an IANA time zone name, e.g. Europe/Paris');
    END IF;
    IF p_s.catch_up IS NULL OR p_s.catch_up NOT IN ('latest', 'all', 'none') THEN
        PERFORM skiplock.invalid(format('catch_up must be latest, all or none, got %s',
                                        coalesce(p_s.catch_up, 'null')));
    END IF;
    IF length(p_s.external_id) > 256 OR length(p_s.deduplication_key) > 256 THEN
        PERFORM skiplock.invalid('external_id and deduplication_key are at most 256 characters');
    END IF;
    p_s.next_slot := skiplock.next_cron_slot(p_s.cron, p_s.timezone, p_now);
    RETURN p_s;
END;
$$;

-- create_schedule: a schedule of task p_task at every slot of p_cron in zone p_timezone.
-- Options: external_id, deduplication_key, payload (any JSON, handed to each run),
-- catch_up ('latest' | 'all' | 'none'), active (default true). With a deduplication_key
-- this is an upsert: the schedule holding that key is updated instead (one schedule per
-- key, however many callers race), and its next slot recomputed if its cron or zone
-- changed. Raises SL008 for a bad cron expression, SL004 for an unknown zone or a bad
-- option; nothing is written then. Returns the schedule.
CREATE OR REPLACE FUNCTION skiplock.create_schedule(
    p_task text, p_cron text, p_timezone text DEFAULT 'UTC', p_options jsonb DEFAULT '{}')
RETURNS skiplock.schedules
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    c_keys CONSTANT text[] := ARRAY['external_id', 'deduplication_key', 'payload', 'catch_up',
                                    'active'];
    v_opts jsonb := coalesce(p_options, '{}');
    v      skiplock.schedules;
BEGIN
    PERFORM skiplock.check_keys(v_opts, c_keys, 'options', 'schedule option');
    v.id := skiplock.gen_id('sched');
    v.task_identifier := p_task;
    v.cron := btrim(p_cron);
    v.timezone := coalesce(p_timezone, 'UTC');
    v.type := 'IMPERATIVE';
    v.external_id := v_opts->>'external_id';
    v.deduplication_key := v_opts->>'deduplication_key';
    v.payload := v_opts->'payload';
    v.catch_up := coalesce(v_opts->>'catch_up', 'latest');
    v.active := coalesce((v_opts->>'active')::boolean, true);
    v.created_at := v_now;
    v.updated_at := v_now;
    v := skiplock.checked_schedule(v, v_now);
    INSERT INTO skiplock.schedules AS s SELECT (v).*
    ON CONFLICT (deduplication_key) DO UPDATE
        SET task_identifier = excluded.task_identifier, cron = excluded.cron,
            timezone = excluded.timezone, external_id = excluded.external_id,
            payload = excluded.payload, catch_up = excluded.catch_up,
            active = excluded.active, updated_at = excluded.updated_at,
            next_slot = CASE WHEN s.cron = excluded.cron AND s.timezone = excluded.timezone
                             THEN s.next_slot ELSE excluded.next_slot END
     WHERE s.type = 'IMPERATIVE'
    RETURNING * INTO v;
    IF v.id IS NULL THEN
        PERFORM skiplock.invalid(format(
            'deduplication key %s belongs to a declarative schedule', v_opts->>'deduplication_key'));
    END IF;
    RETURN v;
END;
$$;

-- update_schedule: change schedule p_id's cron, timezone, task, external_id, payload or
-- catch_up (keys of p_changes, any other key is SL004; what it leaves out stays). A
-- declarative schedule changes in code only (SL004). Its next slot is recomputed when the cron or zone changes. SL009 when
-- there is no such schedule. Returns the schedule.
CREATE OR REPLACE FUNCTION skiplock.update_schedule(p_id text, p_changes jsonb)
RETURNS skiplock.schedules
LANGUAGE plpgsql AS $$
DECLARE
    c_keys CONSTANT text[] := ARRAY['cron', 'timezone', 'task', 'external_id', 'payload',
                                    'catch_up'];
    v_now timestamptz := skiplock.now();
    v_old skiplock.schedules := skiplock.schedule_for_update(p_id);
    v     skiplock.schedules := v_old;
BEGIN
    IF v_old.type = 'DECLARATIVE' THEN
        PERFORM skiplock.invalid(format(
            'schedule %s is declared in code (task %s): change it there', p_id, v_old.task_identifier));
    END IF;
    PERFORM skiplock.check_keys(p_changes, c_keys, 'changes', 'schedule change');
    IF p_changes ? 'cron' THEN v.cron := btrim(p_changes->>'cron'); END IF;
    IF p_changes ? 'timezone' THEN v.timezone := p_changes->>'timezone'; END IF;
    IF p_changes ? 'task' THEN v.task_identifier := p_changes->>'task'; END IF;
    IF p_changes ? 'external_id' THEN v.external_id := p_changes->>'external_id'; END IF;
    IF p_changes ? 'payload' THEN v.payload := p_changes->'payload'; END IF;
    IF p_changes ? 'catch_up' THEN v.catch_up := p_changes->>'catch_up'; END IF;
    v := skiplock.checked_schedule(v, v_now);
    UPDATE skiplock.schedules s
       SET cron = v.cron, timezone = v.timezone, task_identifier = v.task_identifier,
           external_id = v.external_id, payload = v.payload, catch_up = v.catch_up,
           next_slot = CASE WHEN v.cron = v_old.cron AND v.timezone = v_old.timezone
                            THEN v_old.next_slot ELSE v.next_slot END,
           updated_at = v_now
     WHERE s.id = p_id
    RETURNING * INTO v;
    RETURN v;
END;
$$;

-- set_schedule_active: activate or deactivate schedule p_id. Activating counts slots
-- from now: those that passed while it was inactive are not fired. SL009 when there is
-- no such schedule. Returns the schedule.
CREATE OR REPLACE FUNCTION skiplock.set_schedule_active(p_id text, p_active boolean)
RETURNS skiplock.schedules
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v     skiplock.schedules := skiplock.schedule_for_update(p_id);
BEGIN
    IF v.active IS DISTINCT FROM p_active THEN
        UPDATE skiplock.schedules s
           SET active = p_active, updated_at = v_now,
               next_slot = CASE WHEN p_active THEN skiplock.next_cron_slot(s.cron, s.timezone, v_now)
                                ELSE s.next_slot END
         WHERE s.id = p_id
        RETURNING * INTO v;
    END IF;
    RETURN v;
END;
$$;

CREATE OR REPLACE FUNCTION skiplock.activate_schedule(p_id text) RETURNS skiplock.schedules
LANGUAGE sql AS $$ SELECT skiplock.set_schedule_active(p_id, true) $$;

CREATE OR REPLACE FUNCTION skiplock.deactivate_schedule(p_id text) RETURNS skiplock.schedules
LANGUAGE sql AS $$ SELECT skiplock.set_schedule_active(p_id, false) $$;

-- delete_schedule: delete schedule p_id (its runs stay). A declarative schedule goes
-- when its task no longer declares it (SL004 here). SL009 when there is none.
CREATE OR REPLACE FUNCTION skiplock.delete_schedule(p_id text) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v skiplock.schedules := skiplock.schedule_for_update(p_id);
BEGIN
    IF v.type = 'DECLARATIVE' THEN
        PERFORM skiplock.invalid(format(
            'schedule %s is declared in code (task %s): remove its cron there, or deactivate it',
            p_id, v.task_identifier));
    END IF;
    DELETE FROM skiplock.schedules s WHERE s.id = p_id;
END;
$$;

-- list_schedules: one page of schedules, oldest first, filtered (NULL: no filter);
-- p_after is the cursor (the last id of the previous page).
CREATE OR REPLACE FUNCTION skiplock.list_schedules(
    p_tasks text[] DEFAULT NULL, p_active boolean DEFAULT NULL, p_type text DEFAULT NULL,
    p_external_id text DEFAULT NULL, p_after text DEFAULT NULL, p_limit integer DEFAULT 20)
RETURNS SETOF skiplock.schedules
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_limit NOT BETWEEN 1 AND 10000 THEN
        PERFORM skiplock.invalid(format('limit must be 1 to 10000, got %s', p_limit));
    END IF;
    RETURN QUERY
    SELECT * FROM skiplock.schedules s
     WHERE (p_tasks IS NULL OR s.task_identifier = ANY (p_tasks))
       AND (p_active IS NULL OR s.active = p_active)
       AND (p_type IS NULL OR s.type = upper(p_type))
       AND (p_external_id IS NULL OR s.external_id = p_external_id)
       AND (p_after IS NULL OR s.id > p_after)
     ORDER BY s.id
     LIMIT p_limit;
END;
$$;

-- latest_cron_slot: the last slot of p_cron in p_tz at or before p_now, given p_from, a
-- slot at or before p_now: after every ticker was down a day, a minutely schedule's
-- latest missed slot in a few evaluations instead of 1,440. Looks back over windows
-- growing 4x from a minute for one holding a slot, then steps forward through it.
CREATE OR REPLACE FUNCTION skiplock.latest_cron_slot(
    p_cron text, p_tz text, p_from timestamptz, p_now timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_back interval := interval '1 minute';
    v_slot timestamptz;
    v_next timestamptz;
BEGIN
    LOOP
        IF p_now - v_back <= p_from THEN
            v_slot := p_from;
            EXIT;
        END IF;
        v_slot := skiplock.next_cron_slot(p_cron, p_tz, p_now - v_back);
        EXIT WHEN v_slot <= p_now;
        v_back := v_back * 4;
    END LOOP;
    LOOP
        v_next := skiplock.next_cron_slot(p_cron, p_tz, v_slot);
        EXIT WHEN v_next IS NULL OR v_next > p_now;
        v_slot := v_next;
    END LOOP;
    RETURN v_slot;
END;
$$;

-- scheduled_payload: what the run of schedule p_s for p_slot receives (the
-- ScheduledPayload model): the slot, the previous slot fired, the zone, the schedule's
-- ids, the next 5 slots, and the schedule's own payload.
CREATE OR REPLACE FUNCTION skiplock.scheduled_payload(p_s skiplock.schedules, p_slot timestamptz)
RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'timestamp', skiplock.iso_utc(p_slot),
        'last_timestamp', skiplock.iso_utc(p_s.last_slot),
        'timezone', p_s.timezone,
        'schedule_id', p_s.id,
        'external_id', p_s.external_id,
        'upcoming', (SELECT coalesce(jsonb_agg(skiplock.iso_utc(u)), '[]')
                       FROM unnest(skiplock.cron_slots(p_s.cron, p_s.timezone, p_slot, 5)) u),
        'payload', p_s.payload)
$$;

-- fire_schedule: trigger the run of schedule p_s (locked by the caller) for p_slot, in
-- the caller's transaction, which advances the schedule. One run per (schedule, slot):
-- a slot fired already (runs_schedule_slot_idx) triggers nothing. A trigger that fails
-- (say, a payload the task's deployment rejects) is recorded in last_error and the
-- schedule moves on. Returns the run id, or NULL.
CREATE OR REPLACE FUNCTION skiplock.fire_schedule(p_s skiplock.schedules, p_slot timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_run text;
BEGIN
    BEGIN
        SELECT t.run_id INTO v_run
          FROM skiplock.trigger(p_s.task_identifier, skiplock.scheduled_payload(p_s, p_slot),
                                jsonb_build_object('schedule_id', p_s.id,
                                                   'schedule_slot', skiplock.iso_utc(p_slot))) t;
        UPDATE skiplock.schedules s SET last_error = NULL WHERE s.id = p_s.id AND s.last_error IS NOT NULL;
    EXCEPTION
        WHEN unique_violation THEN
            v_run := NULL;  -- fired already
        WHEN OTHERS THEN
            UPDATE skiplock.schedules s
               SET last_error = format('%s: %s', skiplock.iso_utc(p_slot), SQLERRM)
             WHERE s.id = p_s.id;
            v_run := NULL;
    END;
    RETURN v_run;
END;
$$;

-- fire_schedules: fire up to p_limit due schedules (next_slot passed), soonest first, each
-- by its catch_up rule for the slots it missed: 'all' fires each (at most 100 per call,
-- the rest on the next), 'latest' only the last, 'none' the last only if it is less than
-- a minute late. Each schedule then moves to its next slot after the last one handled.
-- Any number of callers: the schedules are taken FOR UPDATE SKIP LOCKED, and a slot
-- already fired (runs_schedule_slot_idx) is not fired again.
-- Returns the number of runs triggered.
CREATE OR REPLACE FUNCTION skiplock.fire_schedules(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := skiplock.now();
    v_s     skiplock.schedules;
    v_slot  timestamptz;
    v_next  timestamptz;
    v_run   text;
    v_count integer := 0;
    v_n     integer;
BEGIN
    FOR v_s IN
        SELECT * FROM skiplock.schedules s
         WHERE s.active AND s.next_slot <= v_now
         ORDER BY s.next_slot
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        v_slot := v_s.next_slot;
        v_run := NULL;
        IF v_s.catch_up = 'all' THEN
            v_n := 0;
            LOOP
                v_run := coalesce(skiplock.fire_schedule(v_s, v_slot), v_run);
                v_count := v_count + (v_run IS NOT NULL)::integer;
                v_s.last_slot := v_slot;
                v_n := v_n + 1;
                v_next := skiplock.next_cron_slot(v_s.cron, v_s.timezone, v_slot);
                EXIT WHEN v_next > v_now OR v_n >= 100;
                v_slot := v_next;
            END LOOP;
        ELSE
            v_next := skiplock.next_cron_slot(v_s.cron, v_s.timezone, v_slot);
            IF v_next <= v_now THEN  -- slots were missed: the latest of them
                v_slot := skiplock.latest_cron_slot(v_s.cron, v_s.timezone, v_slot, v_now);
                v_next := skiplock.next_cron_slot(v_s.cron, v_s.timezone, v_slot);
            END IF;
            IF v_s.catch_up = 'latest' OR v_slot > v_now - interval '1 minute' THEN
                v_run := skiplock.fire_schedule(v_s, v_slot);
                v_count := v_count + (v_run IS NOT NULL)::integer;
            END IF;
            v_s.last_slot := v_slot;
        END IF;
        UPDATE skiplock.schedules s
           SET next_slot = v_next, last_slot = v_s.last_slot,
               last_run_id = coalesce(v_run, s.last_run_id)
         WHERE s.id = v_s.id;
    END LOOP;
    RETURN v_count;
END;
$$;

-- sync_declared_schedules: keep the DECLARATIVE schedules in step with a deployment of
-- version p_version whose tasks p_tasks (register_worker's entries) may say "cron",
-- "timezone" and "catch_up": a task that declares one gets its schedule created or
-- updated; a task deployed without one loses its declared schedule. A "dev" version
-- changes nothing a non-dev version declared (a developer's worker does not move or
-- remove production's schedules). Raises SL008/SL004 for a bad cron or zone.
CREATE OR REPLACE FUNCTION skiplock.sync_declared_schedules(p_version text, p_tasks jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_task jsonb;
    v_old  skiplock.schedules;
    v      skiplock.schedules;
BEGIN
    FOR v_task IN
        SELECT t FROM jsonb_array_elements(p_tasks) t ORDER BY t->>'id'  -- one lock order
    LOOP
        SELECT * INTO v_old FROM skiplock.schedules s
         WHERE s.type = 'DECLARATIVE' AND s.task_identifier = v_task->>'id' FOR UPDATE;
        CONTINUE WHEN FOUND AND p_version = 'dev' AND v_old.declared_version <> 'dev';
        IF jsonb_typeof(v_task->'cron') = 'string' THEN
            v := v_old;
            v.id := coalesce(v_old.id, skiplock.gen_id('sched'));
            v.task_identifier := v_task->>'id';
            v.cron := btrim(v_task->>'cron');
            v.timezone := coalesce(v_task->>'timezone', 'UTC');
            v.type := 'DECLARATIVE';
            v.catch_up := coalesce(v_task->>'catch_up', 'latest');
            v.active := coalesce(v_old.active, true);
            v.declared_version := p_version;
            v.created_at := coalesce(v_old.created_at, v_now);
            v.updated_at := v_now;
            v := skiplock.checked_schedule(v, v_now);
            IF v_old.id IS NOT NULL AND v_old.cron = v.cron AND v_old.timezone = v.timezone THEN
                v.next_slot := v_old.next_slot;  -- unchanged: keep its place
            END IF;
            INSERT INTO skiplock.schedules AS s SELECT (v).*
            ON CONFLICT (task_identifier) WHERE type = 'DECLARATIVE' DO UPDATE
                SET cron = excluded.cron, timezone = excluded.timezone,
                    catch_up = excluded.catch_up, declared_version = excluded.declared_version,
                    next_slot = excluded.next_slot, updated_at = excluded.updated_at;
        ELSIF v_old.id IS NOT NULL THEN
            DELETE FROM skiplock.schedules s WHERE s.id = v_old.id;
        END IF;
    END LOOP;
END;
$$;
