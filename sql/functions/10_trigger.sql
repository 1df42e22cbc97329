-- Triggering: create runs, one or a batch, with idempotency keys. trigger() and the
-- set-based insert_runs share every step but the INSERT statement itself (one row, or a
-- set): task_deployment, run_options, lock_parent, create_queues, and new_run for the
-- row they insert.

-- task_deployment: the latest deployment of task p_task (of version p_version, if not
-- NULL), whose defaults a new run takes; no row when none has it. One SELECT in SQL: the
-- planner inlines it into the caller's query.
CREATE OR REPLACE FUNCTION skiplock.task_deployment(p_task text, p_version text)
RETURNS SETOF skiplock.deployment_tasks
LANGUAGE sql STABLE AS $$
    SELECT * FROM skiplock.deployment_tasks d
     WHERE d.task_identifier = p_task AND (p_version IS NULL OR d.version = p_version)
     ORDER BY d.deployed_at DESC, d.version DESC LIMIT 1
$$;

-- lock_parent: the run p_parent_id, which a run being triggered will have as its parent.
-- SL001 when there is no such run.
-- Locks: the run FOR KEY SHARE: it cannot be deleted, and no status change waits for it.
CREATE OR REPLACE FUNCTION skiplock.lock_parent(p_parent_id text) RETURNS skiplock.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_parent skiplock.runs;
BEGIN
    SELECT * INTO v_parent FROM skiplock.runs r WHERE r.id = p_parent_id FOR KEY SHARE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001',
            MESSAGE = format('parent run %s does not exist', p_parent_id);
    END IF;
    RETURN v_parent;
END;
$$;

-- create_queues: a queue named by a trigger exists from then on. Creates those of
-- p_names that do not exist yet, but p_deployed (the deployed task's queue, which does)
-- and names no run can have (empty, over 256 characters: the trigger fails anyway).
CREATE OR REPLACE FUNCTION skiplock.create_queues(
    p_names text[], p_deployed text, p_now timestamptz)
RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO skiplock.queues (name, created_at, updated_at)
    SELECT DISTINCT n, p_now, p_now FROM unnest(p_names) n
     WHERE n IS DISTINCT FROM p_deployed AND length(n) BETWEEN 1 AND 256
    ON CONFLICT (name) DO NOTHING;
END;
$$;

-- new_run: the row of a new run of p_task: its payload, its values from the options
-- (p_run, from run_options), p_options' version, batch_id, idempotency key and trace
-- context, whether a deployment has the task (else PENDING_VERSION), its parent (NULLs
-- for none). The one place a new run's columns get their values, in skiplock.runs'
-- column order: trigger() inserts one such row, insert_runs an array of them. A column
-- added to skiplock.runs goes here too (until it does, every trigger fails).
-- A SQL function of one SELECT, VOLATILE as gen_id is, with no SET clause, so that the
-- planner inlines it into the caller's statement (tests/test_migrations.py checks it);
-- not inlined, each call would plan its query anew. Callers take the row whole: in
-- (skiplock.new_run(...)).* the parser copies the call for each column, and inlining 37
-- copies took 3 ms of planning.
CREATE OR REPLACE FUNCTION skiplock.new_run(
    p_task text, p_payload jsonb, p_run skiplock.run_values, p_options jsonb,
    p_deployed boolean, p_parent skiplock.runs, p_now timestamptz)
RETURNS skiplock.runs
LANGUAGE sql VOLATILE AS $$
    SELECT ROW(
        skiplock.gen_id('run'),                                     -- id
        p_task,                                                     -- task_identifier
        CASE WHEN NOT p_deployed THEN 'PENDING_VERSION'
             WHEN p_run.delay > p_now THEN 'DELAYED'
             ELSE 'QUEUED' END::skiplock.run_status,                -- status
        p_payload,                                                  -- payload
        NULL, NULL,                                                 -- output, error
        p_run.metadata, p_run.tags,                                 -- metadata, tags
        p_options->>'idempotency_key',                              -- idempotency_key
        p_now + make_interval(
            secs => (p_options->>'idempotency_key_ttl')::double precision),  -- ..._expires_at
        false,                                                      -- idempotency_key_released
        p_options->>'batch_id',                                     -- batch_id
        p_parent.id, coalesce(p_parent.root_id, p_parent.id),       -- parent_id, root_id
        coalesce(p_parent.depth + 1, 0),                            -- depth
        p_run.queue, p_run.concurrency_key, p_run.priority,         -- queue, ..., priority
        p_options->>'version', p_options->>'version' IS NOT NULL,   -- version, version_pinned
        p_run.max_attempts, p_run.max_duration,                     -- max_attempts, max_duration
        0, NULL, NULL,                                  -- attempt_count, current_attempt_id, worker_id
        p_run.start_at - make_interval(secs => p_run.priority),     -- order_at
        p_run.start_at,                                             -- available_at
        p_now, p_now,                                               -- created_at, updated_at
        NULL, NULL,                                                 -- started_at, finished_at
        p_run.delay, p_run.ttl,                                     -- delayed_until, ttl
        NULL,                                                       -- expired_at
        p_run.start_at + make_interval(secs => p_run.ttl),          -- expires_at
        false, false,                                               -- suspended, waited_on
        0,                                                          -- interruptions
        nullif(p_run.retention, 'Infinity'),                        -- retention_s
        p_options->>'schedule_id',                                  -- schedule_id
        (p_options->>'schedule_slot')::timestamptz,                 -- schedule_slot
        p_options->'trace_context',                                 -- trace_context
        p_run.rate_limit_key, p_run.rate_cost                       -- rate_limit_key, rate_cost
    )::skiplock.runs
$$;

-- trigger: create a run of p_task with p_payload, or return the live run that holds
-- the same (task, idempotency key).
-- Options (all optional; any other key is SL004, see option_type_problem): delay_seconds
--   | delay_until, ttl (s), idempotency_key, idempotency_key_ttl (s), tags, metadata, queue, concurrency_key, priority (s),
--   max_attempts, max_duration (s), version, batch_id, parent_id, retention (s, null:
--   forever) and default_retention (s, null: forever; see run_retention); schedule_id and
--   schedule_slot (set by fire_schedule: one run per schedule and slot); debounce
--   ({"key", "delay", "mode", "max_delay"}: see debounce_trigger); trace_context (the
--   W3C carrier of the trigger's OpenTelemetry span, kept with the run); rate_limit_key
--   (the run's own budget in a rate-limited queue) and rate_cost (units of it the run
--   takes, a whole number >= 1; default 1).
-- Locks: the unique idempotency index entry (concurrent triggers with one key wait
--   for each other, so exactly one run is made); the parent row FOR KEY SHARE if any.
-- Status: PENDING_VERSION when no deployment has the task (or the pinned version),
--   DELAYED when the delay is in the future, QUEUED otherwise.
-- Returns (run_id, run_status, is_cached). Raises SL004 on bad options, SL001 when the
-- parent does not exist.
CREATE OR REPLACE FUNCTION skiplock.trigger(p_task text, p_payload jsonb, p_options jsonb DEFAULT '{}')
RETURNS TABLE (run_id text, run_status skiplock.run_status, is_cached boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now        timestamptz := skiplock.now();
    v_opts       jsonb := coalesce(p_options, '{}');
    v_key        text;
    v_dep        skiplock.deployment_tasks;
    v_deployed   boolean;
    v_run        skiplock.run_values;
    v_status     skiplock.run_status;
    v_parent     skiplock.runs;
    v_row        skiplock.runs;
    v_id         text;
    v_existing   skiplock.runs;
BEGIN
    IF p_task IS NULL OR length(p_task) = 0 OR length(p_task) > 256 THEN
        PERFORM skiplock.invalid('task id must be 1 to 256 characters');
    END IF;
    IF p_payload IS NULL THEN
        PERFORM skiplock.invalid('payload must not be SQL NULL (use JSON null)');
    END IF;
    PERFORM skiplock.assert_valid(skiplock.option_type_problem(v_opts));
    IF v_opts ? 'debounce' THEN  -- joins the run of its key, or makes it (12_debounce.sql)
        RETURN QUERY SELECT * FROM skiplock.debounce_trigger(p_task, p_payload, v_opts);
        RETURN;
    END IF;
    v_key := v_opts->>'idempotency_key';
    IF length(v_key) > 2048 THEN
        PERFORM skiplock.invalid('idempotency_key must be at most 2048 characters');
    END IF;
    IF (v_opts->>'idempotency_key_ttl')::double precision <= 0 THEN
        PERFORM skiplock.invalid('idempotency_key_ttl must be positive');
    END IF;

    SELECT * INTO v_dep FROM skiplock.task_deployment(p_task, v_opts->>'version');
    v_deployed := FOUND;
    v_run := skiplock.run_options(v_opts, p_task, v_dep, v_now);
    PERFORM skiplock.assert_valid(v_run.problem);
    IF v_opts ? 'parent_id' THEN
        v_parent := skiplock.lock_parent(v_opts->>'parent_id');
    END IF;
    IF v_run.queue IS DISTINCT FROM v_dep.queue THEN  -- the deployed task's queue exists
        PERFORM skiplock.create_queues(ARRAY[v_run.queue], v_dep.queue, v_now);
    END IF;

    LOOP
        v_row := skiplock.new_run(p_task, p_payload, v_run, v_opts, v_deployed, v_parent, v_now);
        INSERT INTO skiplock.runs AS r
        SELECT (v_row).*  -- a PL/pgSQL row: its fields are read without unpacking it again
        ON CONFLICT (task_identifier, idempotency_key)
            WHERE idempotency_key IS NOT NULL AND NOT idempotency_key_released
              AND status NOT IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT', 'EXPIRED')
            DO NOTHING
        RETURNING r.id, r.status INTO v_id, v_status;

        IF v_id IS NOT NULL THEN
            -- a batch lists its runs (trigger_batch writes its own row after its items)
            IF v_opts ? 'batch_id' THEN
                UPDATE skiplock.batches b
                   SET run_ids = b.run_ids || v_id WHERE b.id = v_opts->>'batch_id';
            END IF;
            PERFORM skiplock.notify_runs(ARRAY[v_id]);
            IF v_status = 'QUEUED' THEN
                PERFORM skiplock.wake(v_run.queue);
            END IF;
            -- OUT parameters and RETURN NEXT: no query for the result row
            run_id := v_id; run_status := v_status; is_cached := false;
            RETURN NEXT;
            RETURN;
        END IF;

        -- the key is held by a live run: return it, unless the key's TTL has passed
        SELECT * INTO v_existing FROM skiplock.runs r
         WHERE r.task_identifier = p_task AND r.idempotency_key = v_key
           AND NOT r.idempotency_key_released
           AND r.status NOT IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT', 'EXPIRED')
         FOR UPDATE;
        IF FOUND THEN
            IF v_existing.idempotency_key_expires_at IS NULL
               OR v_existing.idempotency_key_expires_at > v_now THEN
                run_id := v_existing.id; run_status := v_existing.status; is_cached := true;
                RETURN NEXT;
                RETURN;
            END IF;
            UPDATE skiplock.runs r SET idempotency_key_released = true WHERE r.id = v_existing.id;
        END IF;
        -- the holder changed under us (failed, released): try the insert again
    END LOOP;
END;
$$;

-- assert_valid: raise SL004 with p_problem unless it is NULL; true otherwise (used in a
-- WHERE clause, so that one bad row of a set-based insert aborts the whole statement).
CREATE OR REPLACE FUNCTION skiplock.assert_valid(p_problem text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF p_problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SL004', MESSAGE = p_problem;
    END IF;
    RETURN true;
END;
$$;

-- option_type_problem: what is wrong with the keys and JSON types of trigger options, or
-- NULL. Checked before any option is read, so that a wrong type is SL004 with its name
-- rather than whatever error a cast of it raises, and a misspelt option (`delay` for
-- `delay_seconds`) is SL004 naming it rather than ignored. c_known lists every option
-- trigger() reads (see its comment): an option added there goes here too.
CREATE OR REPLACE FUNCTION skiplock.option_type_problem(p_opts jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    c_known CONSTANT text[] := ARRAY[
        'batch_id', 'concurrency_key', 'debounce', 'default_retention', 'delay_seconds',
        'delay_until', 'idempotency_key', 'idempotency_key_ttl', 'max_attempts',
        'max_duration', 'metadata', 'parent_id', 'priority', 'queue', 'rate_cost',
        'rate_limit_key', 'retention', 'schedule_id', 'schedule_slot', 'tags',
        'trace_context', 'ttl', 'version'];
BEGIN
    -- this runs on every trigger: PL/pgSQL's simple-expression path, no query unless tags
    -- are given or a key is unknown (as a SQL function, the call alone cost ~14 us)
    IF jsonb_typeof(p_opts) <> 'object' THEN
        RETURN 'options must be a JSON object';
    END IF;
    IF p_opts - c_known <> '{}' THEN
        RETURN skiplock.unknown_keys_problem(p_opts, c_known, 'trigger option');
    END IF;
    IF p_opts ? 'tags' THEN
        IF jsonb_typeof(p_opts->'tags') <> 'array' THEN
            RETURN 'tags must be an array of strings';
        END IF;
        IF EXISTS (SELECT 1 FROM jsonb_array_elements(p_opts->'tags') t
                    WHERE jsonb_typeof(t) <> 'string') THEN
            RETURN 'tags must be an array of strings';
        END IF;
    END IF;
    RETURN CASE
        WHEN jsonb_typeof(p_opts->'metadata') <> 'object' THEN 'metadata must be a JSON object'
        WHEN jsonb_typeof(p_opts->'delay_seconds') <> 'number' THEN 'delay_seconds must be a number'
        WHEN jsonb_typeof(p_opts->'ttl') <> 'number' THEN 'ttl must be a number'
        WHEN jsonb_typeof(p_opts->'idempotency_key_ttl') <> 'number'
            THEN 'idempotency_key_ttl must be a number'
        WHEN jsonb_typeof(p_opts->'priority') <> 'number' THEN 'priority must be a number'
        WHEN jsonb_typeof(p_opts->'max_attempts') <> 'number' THEN 'max_attempts must be a number'
        WHEN jsonb_typeof(p_opts->'max_duration') <> 'number' THEN 'max_duration must be a number'
        WHEN jsonb_typeof(p_opts->'idempotency_key') <> 'string'
            THEN 'idempotency_key must be a string'
        WHEN jsonb_typeof(p_opts->'queue') <> 'string' THEN 'queue must be a string'
        WHEN jsonb_typeof(p_opts->'concurrency_key') <> 'string'
            THEN 'concurrency_key must be a string'
        WHEN jsonb_typeof(p_opts->'version') <> 'string' THEN 'version must be a string'
        WHEN jsonb_typeof(p_opts->'batch_id') <> 'string' THEN 'batch_id must be a string'
        WHEN jsonb_typeof(p_opts->'parent_id') <> 'string' THEN 'parent_id must be a string'
        WHEN jsonb_typeof(p_opts->'delay_until') <> 'string' THEN 'delay_until must be a string'
        WHEN jsonb_typeof(p_opts->'schedule_id') <> 'string' THEN 'schedule_id must be a string'
        WHEN jsonb_typeof(p_opts->'schedule_slot') <> 'string' THEN 'schedule_slot must be a string'
        WHEN jsonb_typeof(p_opts->'rate_limit_key') <> 'string'
            THEN 'rate_limit_key must be a string'
        WHEN jsonb_typeof(p_opts->'rate_cost') <> 'number' THEN 'rate_cost must be a number'
        WHEN jsonb_typeof(p_opts->'retention') NOT IN ('number', 'null')
            THEN 'retention must be a number of seconds or null'
        WHEN jsonb_typeof(p_opts->'default_retention') NOT IN ('number', 'null')
            THEN 'default_retention must be a number of seconds or null'
        WHEN jsonb_typeof(p_opts->'trace_context') <> 'object'
            THEN 'trace_context must be a JSON object'
        WHEN octet_length((p_opts->'trace_context')::text) > 4096
            THEN 'trace_context must be at most 4 KB'
    END;
END;
$$;

-- run_retention: how long a run of a task deployed as p_dep, in queue p_queue, is kept
-- once finished, in seconds ('Infinity': forever). The first that says: the trigger's
-- `retention` option, the task's, its queue's (see skiplock.queues.retention_s), the
-- triggering engine's default (`default_retention`), the deploying engine's
-- default, then 30 days. A JSON null option means forever.
CREATE OR REPLACE FUNCTION skiplock.run_retention(
    p_opts jsonb, p_dep skiplock.deployment_tasks, p_queue text)
RETURNS double precision
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_queue double precision;
BEGIN
    IF p_opts ? 'retention' THEN
        RETURN coalesce((p_opts->>'retention')::double precision, 'Infinity');
    END IF;
    IF p_dep.task_retention_s IS NOT NULL THEN
        RETURN p_dep.task_retention_s;
    END IF;
    IF p_queue = p_dep.queue THEN
        v_queue := p_dep.queue_retention_s;
    ELSE  -- a queue other than the task's: one primary-key probe
        SELECT q.retention_s INTO v_queue FROM skiplock.queues q WHERE q.name = p_queue;
    END IF;
    IF v_queue IS NOT NULL THEN
        RETURN v_queue;
    END IF;
    IF p_opts ? 'default_retention' THEN
        RETURN coalesce((p_opts->>'default_retention')::double precision, 'Infinity');
    END IF;
    RETURN coalesce(p_dep.default_retention_s, 2592000);
END;
$$;

-- run_options: the values a run takes from its options p_opts (over the defaults of the
-- task's deployment p_dep), with what is wrong with them (problem; NULL if nothing). One
-- definition for trigger() and insert_runs(), which computes it once for the options
-- every item of a batch shares.
CREATE OR REPLACE FUNCTION skiplock.run_options(
    p_opts jsonb, p_task text, p_dep skiplock.deployment_tasks, p_now timestamptz)
RETURNS skiplock.run_values
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v skiplock.run_values;
BEGIN
    v.problem := skiplock.option_type_problem(p_opts);
    IF v.problem IS NOT NULL THEN
        RETURN v;
    END IF;
    IF p_opts ? 'delay_seconds' THEN
        IF (p_opts->>'delay_seconds')::double precision < 0 THEN
            v.problem := format('delay must not be negative, got %s s', p_opts->>'delay_seconds');
            RETURN v;
        END IF;
        v.delay := p_now + make_interval(secs => (p_opts->>'delay_seconds')::double precision);
    ELSIF p_opts ? 'delay_until' THEN
        v.delay := (p_opts->>'delay_until')::timestamptz;
    END IF;
    -- TTL counts from enqueue: the trigger, or the end of the delay
    v.start_at := greatest(p_now, coalesce(v.delay, p_now));
    v.ttl := coalesce((p_opts->>'ttl')::double precision, p_dep.ttl);
    v.priority := coalesce((p_opts->>'priority')::integer, 0);
    v.queue := coalesce(p_opts->>'queue', p_dep.queue, p_task);
    v.concurrency_key := p_opts->>'concurrency_key';
    v.max_attempts := coalesce((p_opts->>'max_attempts')::integer, p_dep.max_attempts, 3);
    v.max_duration := coalesce((p_opts->>'max_duration')::double precision, p_dep.max_duration);
    v.metadata := coalesce(p_opts->'metadata', '{}');
    v.retention := skiplock.run_retention(p_opts, p_dep, v.queue);
    v.rate_limit_key := p_opts->>'rate_limit_key';
    IF p_opts ? 'rate_cost' THEN
        IF (p_opts->>'rate_cost')::numeric NOT BETWEEN 1 AND 2147483647
           OR (p_opts->>'rate_cost')::numeric % 1 <> 0 THEN
            v.problem := format('rate_cost must be a whole number of at least 1, got %s',
                                p_opts->>'rate_cost');
            RETURN v;
        END IF;
        v.rate_cost := (p_opts->>'rate_cost')::integer;
    END IF;
    v.tags := '{}';
    IF p_opts ? 'tags' THEN
        v.tags := ARRAY(SELECT jsonb_array_elements_text(p_opts->'tags'));
    END IF;
    v.problem := CASE
        WHEN v.ttl <= 0 THEN 'ttl must be positive'
        WHEN v.max_attempts < 1 THEN 'max_attempts must be at least 1'
        WHEN v.max_duration <= 0 THEN 'max_duration must be positive'
        WHEN length(v.concurrency_key) > 256 THEN 'concurrency_key must be at most 256 characters'
        WHEN length(v.rate_limit_key) NOT BETWEEN 1 AND 256
            THEN 'rate_limit_key must be 1 to 256 characters'
        WHEN length(v.queue) NOT BETWEEN 1 AND 256 THEN 'queue name must be 1 to 256 characters'
        WHEN octet_length(v.metadata::text) > 262144 THEN 'metadata must be at most 256 KB'
        WHEN v.retention <= 0 THEN 'retention must be positive (null keeps forever)'
    END;
    IF v.problem IS NULL AND v.tags <> '{}' AND (cardinality(v.tags) > 10 OR EXISTS (
            SELECT 1 FROM unnest(v.tags) t WHERE length(t) NOT BETWEEN 1 AND 128)) THEN
        v.problem := 'a run has at most 10 tags of 1 to 128 characters';
    END IF;
    RETURN v;
END;
$$;

-- insert_runs: the set-based body of trigger_batch for items without idempotency keys
-- and without versions or parents of their own (the batch's apply to all): one INSERT
-- for the whole batch instead of one trigger() call per item, with trigger()'s steps
-- (the shared options' values once). Checks every item as trigger() does; one bad item
-- aborts the statement. Returns the runs in item order.
CREATE OR REPLACE FUNCTION skiplock.insert_runs(p_task text, p_items jsonb, p_options jsonb)
RETURNS TABLE (run_id text, run_status skiplock.run_status, run_queue text)
LANGUAGE plpgsql AS $$
DECLARE
    v_now     timestamptz := skiplock.now();
    v_base    jsonb := coalesce(p_options, '{}');
    v_dep     skiplock.deployment_tasks;
    v_found   boolean;
    v_shared  skiplock.run_values;
    v_parent  skiplock.runs;
    v_rows    skiplock.runs[];
BEGIN
    PERFORM skiplock.assert_valid(skiplock.option_type_problem(v_base));
    SELECT * INTO v_dep FROM skiplock.task_deployment(p_task, v_base->>'version');
    v_found := FOUND;
    v_shared := skiplock.run_options(v_base, p_task, v_dep, v_now);
    PERFORM skiplock.assert_valid(v_shared.problem);
    IF v_base ? 'parent_id' THEN
        v_parent := skiplock.lock_parent(v_base->>'parent_id');
    END IF;
    v_rows := ARRAY(
        WITH items AS (
            SELECT x.ord, x.item->'payload' AS payload, o.v
              FROM jsonb_array_elements(p_items) WITH ORDINALITY AS x(item, ord)
             CROSS JOIN LATERAL (  -- OFFSET 0: evaluated once per item, not once per field
                 SELECT CASE WHEN x.item->'options' IS NULL OR x.item->'options' = '{}'
                             THEN v_shared
                             ELSE skiplock.run_options(v_base || (x.item->'options'), p_task,
                                                       v_dep, v_now)
                        END AS v
                 OFFSET 0) o)
        SELECT skiplock.new_run(p_task, i.payload, i.v, v_base, v_found, v_parent, v_now)
          FROM items i
         WHERE (i.payload IS NOT NULL AND (i.v).problem IS NULL)
            OR skiplock.assert_valid(CASE WHEN i.payload IS NULL
                                          THEN 'payload must not be SQL NULL (use JSON null)'
                                          ELSE (i.v).problem END)
         ORDER BY i.ord);  -- gen_id (volatile) is evaluated after the sort: ids in item order
    PERFORM skiplock.create_queues(ARRAY(SELECT u.queue FROM unnest(v_rows) u), v_dep.queue,
                                   v_now);
    RETURN QUERY
    INSERT INTO skiplock.runs AS r
    SELECT u.* FROM unnest(v_rows) u  -- in array order
    RETURNING r.id, r.status, r.queue;
END;
$$;

-- trigger_batch: create up to 1,000 runs of p_task in one call, grouped under a new
-- batch id. p_items is a JSON array of {"payload": ..., "options": {...}} (no other key);
-- each item's options override p_options. All or nothing: one bad item writes no run. Items without
-- idempotency keys, versions or parents of their own go in one set-based INSERT.
-- The batch's row lists the runs it created (run_ids: its runs are read by primary key).
-- Returns (batch_id, run_id, run_status, is_cached) in item order. SL005 over 1,000.
CREATE OR REPLACE FUNCTION skiplock.trigger_batch(p_task text, p_items jsonb, p_options jsonb DEFAULT '{}')
RETURNS TABLE (batch_id text, run_id text, run_status skiplock.run_status, is_cached boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_batch text := skiplock.gen_id('batch');
    v_count integer := jsonb_array_length(p_items);
    v_opts  jsonb := coalesce(p_options, '{}') || jsonb_build_object('batch_id', v_batch);
    v_item  jsonb;
    v_queue text;
    v_queues text[];
    v_ids   text[];
    v_statuses skiplock.run_status[];
    c_item_keys CONSTANT text[] := ARRAY['payload', 'options'];
    v_own     boolean;
    v_problem text;
BEGIN
    IF v_count > 1000 THEN
        RAISE EXCEPTION USING ERRCODE = 'SL005',
            MESSAGE = format('a batch holds at most 1000 items, got %s', v_count);
    END IF;
    IF v_count = 0 THEN
        PERFORM skiplock.invalid('a batch needs at least one item');
    END IF;
    IF p_task IS NULL OR length(p_task) NOT BETWEEN 1 AND 256 THEN
        PERFORM skiplock.invalid('task id must be 1 to 256 characters');
    END IF;
    -- one pass over the items: is any of them keyed, versioned or parented on its own, and
    -- does any have a key beside payload and options (a misspelt "option": SL004)
    SELECT coalesce(bool_or(i->'options' ?| ARRAY['idempotency_key', 'version', 'parent_id']),
                    false),
           min(skiplock.unknown_keys_problem(i, c_item_keys, 'batch item key'))
               FILTER (WHERE jsonb_typeof(i) = 'object' AND i - c_item_keys <> '{}')
      INTO v_own, v_problem
      FROM jsonb_array_elements(p_items) i;
    PERFORM skiplock.assert_valid(v_problem);
    IF NOT v_opts ? 'idempotency_key' AND NOT v_own THEN
        SELECT array_agg(i.run_id ORDER BY i.run_id), array_agg(i.run_status ORDER BY i.run_id),
               array_agg(DISTINCT i.run_queue) FILTER (WHERE i.run_status = 'QUEUED')
          INTO v_ids, v_statuses, v_queues
          FROM skiplock.insert_runs(p_task, p_items, v_opts) i;
        PERFORM skiplock.notify_runs(v_ids);
        FOREACH v_queue IN ARRAY coalesce(v_queues, '{}') LOOP
            PERFORM skiplock.wake(v_queue);
        END LOOP;
        RETURN QUERY SELECT v_batch, u.id, u.status, false
                       FROM unnest(v_ids, v_statuses) AS u(id, status);
    ELSE
        v_ids := '{}';
        FOR v_item IN SELECT value FROM jsonb_array_elements(p_items) WITH ORDINALITY
                       ORDER BY ordinality LOOP
            SELECT v_batch, t.run_id, t.run_status, t.is_cached
              INTO batch_id, run_id, run_status, is_cached
              FROM skiplock.trigger(p_task, v_item->'payload',
                                    v_opts || coalesce(v_item->'options', '{}')) t;
            IF NOT is_cached THEN  -- a cached run belongs to whatever created it
                v_ids := v_ids || run_id;
            END IF;
            RETURN NEXT;
        END LOOP;
    END IF;
    -- written once, with its runs: trigger() appending one by one would rewrite the list
    -- for each item
    INSERT INTO skiplock.batches (id, task_identifier, run_count, created_at, run_ids)
    VALUES (v_batch, p_task, v_count, skiplock.now(), v_ids);
END;
$$;
