-- The skiplock schema as a fresh migrate makes it: tables, types, indexes, views,
-- triggers and functions. Generated, not applied: migrations (sql/migrations) and the
-- re-applied files (sql/functions, sql/views, sql/triggers) make the schema, and this
-- file shows the result. Regenerate it after changing any of them:
--     python -m engine.db.schema_dump > sql/schema.sql
-- It is pg_dump --schema-only output with what varies between PostgreSQL 15 to 18 and
-- their pg_dump taken out (engine/db/schema_dump.py); tests/test_schema.py checks it.

CREATE SCHEMA skiplock;

CREATE TYPE skiplock.attempt_status AS ENUM (
    'EXECUTING',
    'COMPLETED',
    'FAILED',
    'CANCELED',
    'TIMED_OUT',
    'CRASHED',
    'SUSPENDED'
);

CREATE TYPE skiplock.run_status AS ENUM (
    'PENDING_VERSION',
    'DELAYED',
    'QUEUED',
    'DEQUEUED',
    'EXECUTING',
    'WAITING',
    'COMPLETED',
    'CANCELED',
    'FAILED',
    'TIMED_OUT',
    'CRASHED',
    'SYSTEM_FAILURE',
    'EXPIRED'
);

CREATE TYPE skiplock.run_values AS (
	problem text,
	delay timestamp with time zone,
	start_at timestamp with time zone,
	tags text[],
	priority integer,
	ttl double precision,
	queue text,
	concurrency_key text,
	max_attempts integer,
	max_duration double precision,
	metadata jsonb,
	retention double precision,
	rate_limit_key text,
	rate_cost integer
);

CREATE TYPE skiplock.waitpoint_status AS ENUM (
    'PENDING',
    'COMPLETED'
);

CREATE TYPE skiplock.waitpoint_type AS ENUM (
    'DATETIME',
    'TOKEN',
    'RUN',
    'BATCH'
);

CREATE TABLE skiplock.schedules (
    id text NOT NULL COLLATE pg_catalog."C",
    task_identifier text NOT NULL COLLATE pg_catalog."C",
    cron text NOT NULL,
    timezone text DEFAULT 'UTC'::text NOT NULL,
    type text NOT NULL COLLATE pg_catalog."C",
    external_id text COLLATE pg_catalog."C",
    deduplication_key text COLLATE pg_catalog."C",
    payload jsonb,
    catch_up text DEFAULT 'latest'::text NOT NULL COLLATE pg_catalog."C",
    active boolean DEFAULT true NOT NULL,
    declared_version text COLLATE pg_catalog."C",
    next_slot timestamp with time zone,
    last_slot timestamp with time zone,
    last_run_id text COLLATE pg_catalog."C",
    last_error text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT schedules_catch_up_check CHECK ((catch_up = ANY (ARRAY['latest'::text, 'all'::text, 'none'::text]))),
    CONSTRAINT schedules_deduplication_key_check CHECK ((length(deduplication_key) <= 256)),
    CONSTRAINT schedules_external_id_check CHECK ((length(external_id) <= 256)),
    CONSTRAINT schedules_task_identifier_check CHECK (((length(task_identifier) >= 1) AND (length(task_identifier) <= 256))),
    CONSTRAINT schedules_type_check CHECK ((type = ANY (ARRAY['DECLARATIVE'::text, 'IMPERATIVE'::text])))
);

CREATE FUNCTION skiplock.activate_schedule(p_id text) RETURNS skiplock.schedules
    LANGUAGE sql
    AS $$ SELECT skiplock.set_schedule_active(p_id, true) $$;

CREATE FUNCTION skiplock.append_run_logs(p_batch jsonb) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    c_max_records CONSTANT bigint := 1000;
    c_max_bytes   CONSTANT bigint := 262144;
    c_marker      CONSTANT bigint := 200;     -- bytes kept free for the marker
    v_now      timestamptz := skiplock.now();
    v_runs     text[];
    v_stored   integer;
    v_run      record;    -- a run past a bound
    v_keep     bigint;    -- its oldest record to keep
    v_gone     bigint;
    v_marker   text;
BEGIN
    v_runs := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.id IN (SELECT b.item->>'run_id' FROM jsonb_array_elements(p_batch) AS b(item))
         ORDER BY r.id
           FOR KEY SHARE);
    IF cardinality(v_runs) = 0 THEN
        RETURN 0;  -- purged (or never were): nothing to keep them for
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('skiplock.run_logs'), hashtext(u.id))
       FROM unnest(v_runs) AS u(id);
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH incoming AS (
        SELECT b.item->>'run_id' AS run_id, b.n, e.k, e.r,
               octet_length(e.r->>4) + coalesce(octet_length(e.r->>5), 0) AS size
          FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS b(item, n)
         CROSS JOIN LATERAL jsonb_array_elements(coalesce(b.item->'records', '[]'))
               WITH ORDINALITY AS e(r, k)
         WHERE b.item->>'run_id' = ANY (v_runs)
    ), numbered AS (
        SELECT i.run_id, i.r, row_number() OVER w AS pos,
               coalesce(sum(i.size) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                        0) AS before
          FROM incoming i
        WINDOW w AS (PARTITION BY i.run_id ORDER BY i.n, i.k)
    ), newest AS (  -- each run's newest record so far: its seq, and the bytes through it
        SELECT u.id, coalesce(l.seq, 0) AS seq, coalesce(l.through, 0) AS through
          FROM unnest(v_runs) AS u(id)
          LEFT JOIN LATERAL (
              SELECT x.seq, x.bytes_before + octet_length(x.message)
                            + coalesce(octet_length(x.exception), 0) AS through
                FROM skiplock.run_logs x WHERE x.run_id = u.id
               ORDER BY x.seq DESC LIMIT 1) l ON true
    )
    INSERT INTO skiplock.run_logs
        (run_id, seq, attempt, at, level, logger, message, exception, bytes_before)
    SELECT n.run_id, w.seq + n.pos, (n.r->>0)::integer,
           v_now - greatest((n.r->>1)::float8, 0) * interval '1 second',
           n.r->>2, n.r->>3, n.r->>4, n.r->>5, w.through + n.before
      FROM numbered n JOIN newest w ON w.id = n.run_id;
    GET DIAGNOSTICS v_stored = ROW_COUNT;
    -- the runs past a bound, or with records the worker dropped: trim them
    FOR v_run IN
        SELECT u.id, f.seq AS first_seq, f.dropped AS first_dropped, l.seq AS last_seq,
               l.through AS total, coalesce(d.dropped, 0) AS dropped
          FROM unnest(v_runs) AS u(id)
          CROSS JOIN LATERAL (
              SELECT x.seq, x.bytes_before, x.dropped FROM skiplock.run_logs x
               WHERE x.run_id = u.id ORDER BY x.seq LIMIT 1) f
          CROSS JOIN LATERAL (
              SELECT x.seq, x.bytes_before + octet_length(x.message)
                            + coalesce(octet_length(x.exception), 0) AS through
                FROM skiplock.run_logs x WHERE x.run_id = u.id
               ORDER BY x.seq DESC LIMIT 1) l
          LEFT JOIN (
              SELECT b.item->>'run_id' AS id, sum((b.item->>'dropped')::bigint) AS dropped
                FROM jsonb_array_elements(p_batch) AS b(item)
               GROUP BY 1) d ON d.id = u.id
         WHERE coalesce(d.dropped, 0) > 0
            OR l.seq - f.seq + 1 > c_max_records
            OR l.through - f.bytes_before > c_max_bytes
    LOOP
        -- keep the newest records that fit beside a marker
        SELECT min(x.seq) INTO v_keep
          FROM skiplock.run_logs x
         WHERE x.run_id = v_run.id AND x.dropped IS NULL
           AND x.bytes_before >= v_run.total - (c_max_bytes - c_marker);
        v_keep := greatest(coalesce(v_keep, v_run.last_seq), v_run.last_seq - c_max_records + 2,
                           v_run.first_seq + (v_run.first_dropped IS NOT NULL)::integer);
        WITH gone AS (
            DELETE FROM skiplock.run_logs x
             WHERE x.run_id = v_run.id AND x.seq < v_keep
            RETURNING coalesce(x.dropped, 1) AS n
        )
        SELECT coalesce(sum(g.n), 0) + v_run.dropped INTO v_gone FROM gone g;
        v_marker := format('%s earlier log %s dropped: a run keeps its last %s records and %s KB',
                           to_char(v_gone, 'FM999,999,999,999'),
                           CASE WHEN v_gone = 1 THEN 'record' ELSE 'records' END,
                           to_char(c_max_records, 'FM999,999'), c_max_bytes / 1024);
        INSERT INTO skiplock.run_logs
            (run_id, seq, attempt, at, level, logger, message, exception, dropped, bytes_before)
        SELECT v_run.id, v_keep - 1, x.attempt, x.at, 'WARNING', 'skiplock', v_marker,
               NULL, v_gone, x.bytes_before - octet_length(v_marker)
          FROM skiplock.run_logs x
         WHERE x.run_id = v_run.id AND x.seq = v_keep;
    END LOOP;
    PERFORM skiplock.notify_run_logs(v_runs);
    RETURN v_stored;
END;
$$;

CREATE FUNCTION skiplock.assert_valid(p_problem text) RETURNS boolean
    LANGUAGE plpgsql IMMUTABLE
    AS $$
BEGIN
    IF p_problem IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SL004', MESSAGE = p_problem;
    END IF;
    RETURN true;
END;
$$;

CREATE FUNCTION skiplock.batch_results(p_batch_id text) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'status', r.status,
                                                 'output', r.output, 'error', r.error)
                              ORDER BY r.id), '[]')
      FROM skiplock.runs r
     WHERE r.id = ANY ((SELECT b.run_ids FROM skiplock.batches b WHERE b.id = p_batch_id)::text[])
       AND r.batch_id = p_batch_id
$$;

CREATE FUNCTION skiplock.batch_trigger_and_wait(p_attempt_id text, p_position integer, p_task text, p_items jsonb, p_options jsonb) RETURNS TABLE(batch_id text, outcome text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_parent  text := (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id);
    v_batch   text;
    v_pending integer;
    v_wp      text := skiplock.gen_id('waitpoint');
BEGIN
    SELECT min(t.batch_id) INTO v_batch FROM skiplock.trigger_batch(p_task, p_items,
        jsonb_build_object('parent_id', v_parent,
                           'version', (SELECT r.version FROM skiplock.runs r WHERE r.id = v_parent))
        || coalesce(p_options, '{}')) t;
    WITH marked AS (
        UPDATE skiplock.runs r SET waited_on = true
         WHERE r.id = ANY ((SELECT b.run_ids FROM skiplock.batches b WHERE b.id = v_batch)::text[])
        RETURNING r.status)
    SELECT count(*) FILTER (WHERE NOT skiplock.is_final(m.status)) INTO v_pending FROM marked m;
    INSERT INTO skiplock.waitpoints (id, type, status, batch_id, pending_runs, created_at,
                                     completed_at, results)
    VALUES (v_wp, 'BATCH', CASE WHEN v_pending = 0 THEN 'COMPLETED'
                                ELSE 'PENDING' END::skiplock.waitpoint_status,
            v_batch, v_pending, skiplock.now(), CASE WHEN v_pending = 0 THEN skiplock.now() END,
            CASE WHEN v_pending = 0 THEN skiplock.batch_results(v_batch) END);
    RETURN QUERY SELECT v_batch, skiplock.block_run(p_attempt_id, p_position, 'batch', p_task,
                                                    ARRAY[v_wp], to_jsonb(v_batch));
END;
$$;

CREATE FUNCTION skiplock.begin_attempts(p_worker_id text, p_version text, p_run_ids text[], p_from skiplock.run_status) RETURNS TABLE(run_id text, task_identifier text, payload jsonb, metadata jsonb, max_duration double precision, attempt_id text, attempt_number integer, resumed boolean, queue text, trace_context jsonb, log jsonb)
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
    v_now timestamptz := skiplock.clock();
BEGIN
    IF cardinality(p_run_ids) = 0 OR NOT skiplock.worker_is_active(p_worker_id) THEN
        RETURN;
    END IF;
    PERFORM skiplock.notify_runs(p_run_ids);  -- ids not started are re-read for nothing
    RETURN QUERY
    WITH started AS (
        UPDATE skiplock.runs r
           SET status = 'EXECUTING', version = coalesce(p_version, r.version),
               worker_id = p_worker_id, suspended = false,
               -- a run resuming from a wait continues its suspended attempt
               attempt_count = r.attempt_count + (NOT r.suspended)::integer,
               current_attempt_id = CASE WHEN r.suspended THEN r.current_attempt_id
                                         ELSE skiplock.gen_id('attempt') END,
               started_at = coalesce(r.started_at, v_now), updated_at = v_now
          FROM skiplock.runs o  -- the row as it was: whether it resumes (o.suspended)
         WHERE r.id = ANY (p_run_ids) AND r.status = p_from
           AND (p_from <> 'DEQUEUED' OR r.worker_id = p_worker_id)
           AND o.id = r.id
        RETURNING r.id, r.task_identifier, r.payload, r.metadata, r.max_duration,
                  r.current_attempt_id, r.attempt_count, r.order_at, o.suspended, r.queue,
                  r.trace_context),
    -- a new attempt: a plain INSERT (ON CONFLICT's speculative insertion cost 4-10 us a
    -- run of backend CPU and a WAL record more); a resumed one exists: UPDATE it
    inserted AS (
        INSERT INTO skiplock.attempts (id, run_id, number, status, worker_id, started_at)
        SELECT s.current_attempt_id, s.id, s.attempt_count, 'EXECUTING', p_worker_id, v_now
          FROM started s
         WHERE NOT s.suspended),
    resumed AS (
        UPDATE skiplock.attempts a SET status = 'EXECUTING', worker_id = p_worker_id
          FROM started s
         WHERE s.suspended AND a.id = s.current_attempt_id)
    SELECT s.id, s.task_identifier, s.payload, s.metadata, s.max_duration, s.current_attempt_id,
           s.attempt_count, s.suspended, s.queue, s.trace_context,
           CASE WHEN s.suspended THEN (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.step), '[]')
                                         FROM skiplock.run_log(s.id) l) END
      FROM started s
     ORDER BY s.order_at, s.id;
END;
$$;

CREATE FUNCTION skiplock.block_run(p_attempt_id text, p_position integer, p_kind text, p_name text, p_waitpoint_ids text[], p_output jsonb DEFAULT NULL::jsonb) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_run skiplock.runs;
BEGIN
    PERFORM 1 FROM skiplock.waitpoints w WHERE w.id = ANY (p_waitpoint_ids)
     ORDER BY w.id FOR SHARE;
    v_run := skiplock.current_run(p_attempt_id);
    IF v_run.id IS NULL THEN
        RETURN 'FENCED';
    END IF;
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, waitpoint_id, created_at)
    VALUES (v_run.id, p_position, p_kind, p_name, p_output, p_waitpoint_ids[1], v_now)
    ON CONFLICT (run_id, position) DO NOTHING;
    -- an unknown id gets an edge too, which its foreign key refuses
    INSERT INTO skiplock.run_waitpoints (run_id, waitpoint_id, created_at, pending)
    SELECT v_run.id, u.id, v_now, coalesce(w.status = 'PENDING', false)
      FROM unnest(p_waitpoint_ids) u(id) LEFT JOIN skiplock.waitpoints w ON w.id = u.id
    ON CONFLICT DO NOTHING;
    IF NOT EXISTS (SELECT 1 FROM skiplock.waitpoints w
                    WHERE w.id = ANY (p_waitpoint_ids) AND w.status = 'PENDING') THEN
        RETURN 'CONTINUE';
    END IF;
    UPDATE skiplock.runs
       SET status = 'WAITING', suspended = true, worker_id = NULL, updated_at = v_now
     WHERE id = v_run.id;
    UPDATE skiplock.attempts SET status = 'SUSPENDED' WHERE id = p_attempt_id;
    PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
    RETURN 'WAITING';
END;
$$;

CREATE FUNCTION skiplock.cancel_run(p_run_id text) RETURNS skiplock.run_status
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_run skiplock.runs := skiplock.run_for_update(p_run_id);
    v_id  text;
BEGIN
    FOR v_id IN
        WITH RECURSIVE tree AS (
            SELECT v_run.id AS id, 0 AS level
            UNION ALL
            SELECT c.id, t.level + 1 FROM skiplock.runs c JOIN tree t ON c.parent_id = t.id)
        SELECT r.id FROM tree t JOIN skiplock.runs r ON r.id = t.id
         WHERE NOT skiplock.is_final(r.status)
         ORDER BY t.level, r.id
         FOR NO KEY UPDATE OF r
    LOOP
        UPDATE skiplock.attempts a SET status = 'CANCELED', finished_at = v_now
          FROM skiplock.runs r
         WHERE r.id = v_id AND a.id = r.current_attempt_id
           AND a.status IN ('EXECUTING', 'SUSPENDED');
        UPDATE skiplock.runs r
           SET status = 'CANCELED', finished_at = v_now, updated_at = v_now, worker_id = NULL
         WHERE r.id = v_id AND NOT skiplock.is_final(r.status);
        PERFORM pg_notify('skiplock_cancel', v_id);
        PERFORM skiplock.notify_runs(ARRAY[v_id]);
    END LOOP;
    RETURN (SELECT r.status FROM skiplock.runs r WHERE r.id = p_run_id);
END;
$$;

CREATE FUNCTION skiplock.check_keys(p_obj jsonb, p_known text[], p_noun text, p_what text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF jsonb_typeof(p_obj) IS DISTINCT FROM 'object' THEN
        PERFORM skiplock.invalid(p_noun || ' must be a JSON object');
    END IF;
    IF p_obj - p_known <> '{}' THEN
        PERFORM skiplock.invalid(skiplock.unknown_keys_problem(p_obj, p_known, p_what));
    END IF;
END;
$$;

CREATE FUNCTION skiplock.checked_schedule(p_s skiplock.schedules, p_now timestamp with time zone) RETURNS skiplock.schedules
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.claim(p_worker_id text, p_version text, p_tasks text[], p_queues text[], p_limit integer) RETURNS TABLE(run_id text, task_identifier text, payload jsonb, metadata jsonb, max_duration double precision, attempt_id text, attempt_number integer, resumed boolean, queue text, trace_context jsonb, log jsonb, retry_in double precision)
    LANGUAGE sql
    AS $$
    SELECT * FROM skiplock.complete_and_claim(NULL, p_worker_id, p_version, p_tasks, p_queues,
                                              p_limit)
$$;

CREATE FUNCTION skiplock.claim_alerts(p_worker_id text, p_limit integer, p_lease double precision, p_max_age double precision DEFAULT 86400) RETURNS TABLE(id text, run_id text, task_identifier text, status skiplock.run_status, created_at timestamp with time zone, attempts integer, delivered_to text[])
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    UPDATE skiplock.alerts a
       SET state = 'ABANDONED', finished_at = v_now,
           last_error = format('not delivered within %s s of the failure', p_max_age)
                        || coalesce(' (last error: ' || a.last_error || ')', '')
     WHERE a.id = ANY (ARRAY(
        SELECT o.id FROM skiplock.alerts o
         WHERE o.state = 'PENDING' AND o.available_at <= v_now
           AND o.created_at < v_now - p_max_age * interval '1 second'
         ORDER BY o.available_at
         LIMIT 1000
           FOR UPDATE SKIP LOCKED));
    RETURN QUERY
    UPDATE skiplock.alerts a
       SET attempts = a.attempts + 1, claimed_by = p_worker_id,
           available_at = v_now + p_lease * interval '1 second'
     WHERE a.id = ANY (ARRAY(
        SELECT o.id FROM skiplock.alerts o
         WHERE o.state = 'PENDING' AND o.available_at <= v_now
         ORDER BY o.available_at, o.id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED))
    RETURNING a.id, a.run_id, a.task_identifier, a.status, a.created_at, a.attempts,
              a.delivered_to;
END;
$$;

CREATE FUNCTION skiplock.clock() RETURNS timestamp with time zone
    LANGUAGE sql
    AS $$
    SELECT coalesce(nullif(current_setting('skiplock.fake_now', true), '')::timestamptz,
                    clock_timestamp())
$$;

CREATE FUNCTION skiplock.complete_and_claim(p_results jsonb, p_worker_id text, p_version text, p_tasks text[], p_queues text[], p_limit integer) RETURNS TABLE(run_id text, task_identifier text, payload jsonb, metadata jsonb, max_duration double precision, attempt_id text, attempt_number integer, resumed boolean, queue text, trace_context jsonb, log jsonb, retry_in double precision)
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    SET enable_bitmapscan TO 'off'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
    v_active   boolean := skiplock.worker_is_active(p_worker_id);  -- first: see Locks
    v_now      timestamptz := skiplock.now();
    v_attempts text[];
    v_by_id    jsonb;
    v_runs     text[];
    v_done     text[];
    v_done_ids text[] := '{}';
    v_queues   text[];
    v_ready    record;
    v_start    timestamptz;
BEGIN
    IF p_results IS NOT NULL THEN  -- as complete_attempts
        SELECT array_agg(x.attempt_id),
               jsonb_object_agg(x.attempt_id, jsonb_build_array(
                   x.output,
                   CASE WHEN octet_length(x.metadata::text) <= 262144 THEN x.metadata END))
          INTO v_attempts, v_by_id
          FROM jsonb_to_recordset(p_results) AS x(attempt_id text, output jsonb, metadata jsonb);
        v_runs := ARRAY(SELECT a.run_id FROM skiplock.attempts a WHERE a.id = ANY (v_attempts));
        WITH done AS (
            UPDATE skiplock.runs r
               SET status = 'COMPLETED', error = NULL, finished_at = v_now, updated_at = v_now,
                   worker_id = NULL,
                   output = nullif(v_by_id -> r.current_attempt_id -> 0, 'null'),
                   metadata = coalesce(nullif(v_by_id -> r.current_attempt_id -> 1, 'null'),
                                       r.metadata)
             WHERE r.id = ANY (v_runs) AND r.status = 'EXECUTING'
               AND r.current_attempt_id = ANY (v_attempts)
            RETURNING r.id, r.current_attempt_id, r.queue)
        SELECT array_agg(d.current_attempt_id), coalesce(array_agg(d.id), '{}'),
               array_agg(DISTINCT d.queue)
          INTO v_done, v_done_ids, v_queues FROM done d;
        PERFORM skiplock.wake(q.name)
           FROM skiplock.queues q
          WHERE q.name = ANY (v_queues) AND q.concurrency_limit IS NOT NULL;
        UPDATE skiplock.attempts a
           SET status = 'COMPLETED', finished_at = v_now,
               output = nullif(v_by_id -> a.id -> 0, 'null')
         WHERE a.id = ANY (v_done) AND a.status = 'EXECUTING';
    END IF;
    IF p_limit <= 0 OR NOT v_active THEN
        PERFORM skiplock.notify_runs(v_done_ids);
        RETURN;
    END IF;
    v_ready := skiplock.lock_ready(p_version, p_tasks, p_queues, p_limit);  -- as claim
    PERFORM skiplock.notify_runs(v_done_ids || v_ready.ids);
    v_start := skiplock.clock();
    RETURN QUERY
    WITH started AS (
        UPDATE skiplock.runs r
           SET status = 'EXECUTING', version = p_version,
               worker_id = p_worker_id, suspended = false,
               attempt_count = r.attempt_count + (NOT r.suspended)::integer,
               current_attempt_id = CASE WHEN r.suspended THEN r.current_attempt_id
                                         ELSE skiplock.gen_id('attempt') END,
               started_at = coalesce(r.started_at, v_start), updated_at = v_start
          FROM skiplock.runs o  -- the row as it was: whether it resumes (o.suspended)
         WHERE r.id = ANY (v_ready.ids) AND r.status = 'QUEUED'
           AND o.id = r.id
        RETURNING r.id, r.task_identifier, r.payload, r.metadata, r.max_duration,
                  r.current_attempt_id, r.attempt_count, r.order_at, o.suspended, r.queue,
                  r.trace_context),
    inserted AS (
        INSERT INTO skiplock.attempts (id, run_id, number, status, worker_id, started_at)
        SELECT s.current_attempt_id, s.id, s.attempt_count, 'EXECUTING', p_worker_id, v_start
          FROM started s
         WHERE NOT s.suspended),
    resumed AS (
        UPDATE skiplock.attempts a SET status = 'EXECUTING', worker_id = p_worker_id
          FROM started s
         WHERE s.suspended AND a.id = s.current_attempt_id)
    SELECT s.id, s.task_identifier, s.payload, s.metadata, s.max_duration, s.current_attempt_id,
           s.attempt_count, s.suspended, s.queue, s.trace_context,
           CASE WHEN s.suspended THEN (SELECT coalesce(jsonb_agg(to_jsonb(l) ORDER BY l.step), '[]')
                                         FROM skiplock.run_log(s.id) l) END,
           NULL::double precision
      FROM started s
     ORDER BY s.order_at, s.id;
    IF v_ready.retry_in IS NOT NULL THEN
        retry_in := v_ready.retry_in;  -- every other column NULL
        RETURN NEXT;
    END IF;
END;
$$;

CREATE FUNCTION skiplock.complete_attempts(p_results jsonb) RETURNS TABLE(run_id text)
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    SET enable_bitmapscan TO 'off'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_attempts text[];
    v_by_id    jsonb;  -- attempt id -> [output, metadata], each JSON null for none
    v_runs     text[];
    v_done     text[];
    v_done_ids text[];
    v_queues   text[];
BEGIN
    -- No joins: every statement reads its table through "id = ANY (array)" on the primary
    -- key, the one plan that stays right with stale statistics (see lock_ready). Joined
    -- against the input rows, the planner scanned a whole index per call instead. No
    -- bitmap scans either: the runs UPDATE's status = 'EXECUTING' matches runs_slots_idx,
    -- and the planner ANDed a bitmap of that whole index (every run claimed since the
    -- last vacuum: 1,810 entries 100 rounds into a drain) with the primary key's: 1.2M
    -- index entries read in a drain of 20,000 at 50 a call, O(n^2).
    -- Each row finds its outcome in a jsonb object by attempt id (a binary search), not
    -- by array_position in parallel arrays, which is a linear search per row: a batch
    -- cost O(n^2), 6.5 us a run of backend CPU at 200 a batch (bench/drain_matrix.py).
    -- (metadata over the 256 KB cap is dropped, not raised: one run must not hold up the
    -- others' outcomes; the run keeps its last accepted metadata. A JSON null output or
    -- metadata is none, SQL NULL, as jsonb_to_recordset reads it.)
    SELECT array_agg(x.attempt_id),
           jsonb_object_agg(x.attempt_id, jsonb_build_array(
               x.output,
               CASE WHEN octet_length(x.metadata::text) <= 262144 THEN x.metadata END))
      INTO v_attempts, v_by_id
      FROM jsonb_to_recordset(p_results) AS x(attempt_id text, output jsonb, metadata jsonb);
    v_runs := ARRAY(SELECT a.run_id FROM skiplock.attempts a WHERE a.id = ANY (v_attempts));
    WITH done AS (
        UPDATE skiplock.runs r
           SET status = 'COMPLETED', error = NULL, finished_at = v_now, updated_at = v_now,
               worker_id = NULL,
               output = nullif(v_by_id -> r.current_attempt_id -> 0, 'null'),
               metadata = coalesce(nullif(v_by_id -> r.current_attempt_id -> 1, 'null'),
                                   r.metadata)
         WHERE r.id = ANY (v_runs) AND r.status = 'EXECUTING'
           AND r.current_attempt_id = ANY (v_attempts)
        RETURNING r.id, r.current_attempt_id, r.queue)
    SELECT array_agg(d.current_attempt_id), array_agg(d.id), array_agg(DISTINCT d.queue)
      INTO v_done, v_done_ids, v_queues FROM done d;
    PERFORM skiplock.notify_runs(v_done_ids);
    -- a limited queue's freed slots may admit runs other workers are waiting to start
    PERFORM skiplock.wake(q.name)
       FROM skiplock.queues q
      WHERE q.name = ANY (v_queues) AND q.concurrency_limit IS NOT NULL;
    RETURN QUERY
    UPDATE skiplock.attempts a
       SET status = 'COMPLETED', finished_at = v_now,
           output = nullif(v_by_id -> a.id -> 0, 'null')
     WHERE a.id = ANY (v_done) AND a.status = 'EXECUTING'
    RETURNING a.run_id;
END;
$$;

CREATE FUNCTION skiplock.complete_token(p_token_id text, p_output jsonb DEFAULT 'null'::jsonb) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM skiplock.waitpoints WHERE id = p_token_id AND type = 'TOKEN') THEN
        RAISE EXCEPTION USING ERRCODE = 'SL007', MESSAGE = format('token %s does not exist', p_token_id);
    END IF;
    RETURN skiplock.complete_waitpoint(p_token_id, coalesce(p_output, 'null'), false);
END;
$$;

CREATE FUNCTION skiplock.complete_waitpoint(p_id text, p_output jsonb, p_is_error boolean DEFAULT false) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run text;
BEGIN
    UPDATE skiplock.waitpoints
       SET status = 'COMPLETED', output = p_output, is_error = coalesce(p_is_error, false),
           completed_at = skiplock.now()
     WHERE id = p_id AND status = 'PENDING';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOR v_run IN SELECT e.run_id FROM skiplock.run_waitpoints e
                  WHERE e.waitpoint_id = p_id AND e.pending ORDER BY e.run_id LOOP
        UPDATE skiplock.run_waitpoints e SET pending = false
          FROM (SELECT r.id FROM skiplock.runs r WHERE r.id = v_run FOR NO KEY UPDATE) r
         WHERE e.run_id = r.id AND e.waitpoint_id = p_id;
        PERFORM skiplock.resume_if_ready(v_run);
    END LOOP;
    RETURN true;
END;
$$;

CREATE FUNCTION skiplock.crash_lost_workers(p_batch integer DEFAULT 100) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_worker   skiplock.workers;
    v_count    integer := 0;
BEGIN
    FOR v_worker IN
        SELECT * FROM skiplock.workers w
         WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND w.lease_expires_at < v_now
         ORDER BY w.lease_expires_at
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED
    LOOP
        UPDATE skiplock.workers SET lost_at = v_now WHERE id = v_worker.id;
        v_count := v_count + skiplock.release_worker_runs(v_worker.id, jsonb_build_object(
            'type', 'WorkerLost',
            'message', format('worker %s stopped renewing its lease (last heartbeat %s)',
                              v_worker.id, v_worker.last_heartbeat_at)));
    END LOOP;
    RETURN v_count;
END;
$$;

CREATE FUNCTION skiplock.create_queues(p_names text[], p_deployed text, p_now timestamp with time zone) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO skiplock.queues (name, created_at, updated_at)
    SELECT DISTINCT n, p_now, p_now FROM unnest(p_names) n
     WHERE n IS DISTINCT FROM p_deployed AND length(n) BETWEEN 1 AND 256
    ON CONFLICT (name) DO NOTHING;
END;
$$;

CREATE FUNCTION skiplock.create_schedule(p_task text, p_cron text, p_timezone text DEFAULT 'UTC'::text, p_options jsonb DEFAULT '{}'::jsonb) RETURNS skiplock.schedules
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.create_token(p_options jsonb DEFAULT '{}'::jsonb) RETURNS TABLE(waitpoint_id text, is_cached boolean)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_opts jsonb := coalesce(p_options, '{}');
    c_keys CONSTANT text[] := ARRAY['timeout', 'idempotency_key', 'idempotency_key_ttl', 'tags'];
    v_key  text := v_opts->>'idempotency_key';
    v_id   text;
BEGIN
    PERFORM skiplock.check_keys(v_opts, c_keys, 'options', 'token option');
    IF (v_opts->>'timeout')::double precision <= 0 THEN
        PERFORM skiplock.invalid('token timeout must be positive');
    END IF;
    IF v_key IS NOT NULL THEN
        -- an expired key is released (set to NULL on the token that held it) so that a
        -- new token can take it
        UPDATE skiplock.waitpoints w SET idempotency_key = NULL
         WHERE w.type = 'TOKEN' AND w.idempotency_key = v_key
           AND w.idempotency_key_expires_at <= v_now;
    END IF;
    INSERT INTO skiplock.waitpoints AS w (id, type, timeout_at, idempotency_key,
                                          idempotency_key_expires_at, tags, created_at)
    VALUES (skiplock.gen_id('waitpoint'), 'TOKEN',
            v_now + make_interval(secs => (v_opts->>'timeout')::double precision), v_key,
            v_now + make_interval(secs => (v_opts->>'idempotency_key_ttl')::double precision),
            coalesce(ARRAY(SELECT jsonb_array_elements_text(v_opts->'tags')), '{}'), v_now)
    ON CONFLICT (idempotency_key) WHERE type = 'TOKEN' AND idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING w.id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN QUERY SELECT v_id, false;
    ELSE
        RETURN QUERY SELECT w.id, true FROM skiplock.waitpoints w
                      WHERE w.type = 'TOKEN' AND w.idempotency_key = v_key;
    END IF;
END;
$$;

CREATE FUNCTION skiplock.cron_check_zone(p_tz text) RETURNS void
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.cron_field(p_cron text, p_field integer, p_text text) RETURNS bigint
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.cron_invalid(p_cron text, p_problem text) RETURNS void
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SL008', MESSAGE = CASE
        WHEN p_cron IS NULL THEN 'invalid cron expression: ' || p_problem
        ELSE format('invalid cron expression "%s": %s', p_cron, p_problem) END;
END;
$$;

CREATE FUNCTION skiplock.cron_next_bit(p_mask bigint, p_from integer) RETURNS integer
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT CASE WHEN p_mask & -(1::bigint << p_from) <> 0
        -- the index of the lowest bit, isolated (x & -x), from its logarithm: exact for the
        -- powers of 2 to 2^62 once rounded
        THEN (ln(((p_mask & -(1::bigint << p_from)) & -(p_mask & -(1::bigint << p_from)))::float8)
              / ln(2::float8))::integer END
$$;

CREATE FUNCTION skiplock.cron_next_wall(p_parsed bigint[], p_after timestamp without time zone) RETURNS timestamp without time zone
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.cron_slot_after(p_parsed bigint[], p_tz text, p_after timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.cron_slots(p_cron text, p_tz text, p_after timestamp with time zone, p_count integer) RETURNS timestamp with time zone[]
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.cron_transition(p_tz text, p_from timestamp with time zone, p_to timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.cron_value(p_cron text, p_field integer, p_text text, p_token text) RETURNS integer
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $_$
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
$_$;

CREATE TABLE skiplock.runs (
    id text NOT NULL COLLATE pg_catalog."C",
    task_identifier text NOT NULL COLLATE pg_catalog."C",
    status skiplock.run_status NOT NULL,
    payload jsonb NOT NULL,
    output jsonb,
    error jsonb,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL,
    tags text[] DEFAULT '{}'::text[] NOT NULL COLLATE pg_catalog."C",
    idempotency_key text COLLATE pg_catalog."C",
    idempotency_key_expires_at timestamp with time zone,
    idempotency_key_released boolean DEFAULT false NOT NULL,
    batch_id text COLLATE pg_catalog."C",
    parent_id text COLLATE pg_catalog."C",
    root_id text COLLATE pg_catalog."C",
    depth integer DEFAULT 0 NOT NULL,
    queue text NOT NULL COLLATE pg_catalog."C",
    concurrency_key text COLLATE pg_catalog."C",
    priority integer DEFAULT 0 NOT NULL,
    version text COLLATE pg_catalog."C",
    version_pinned boolean DEFAULT false NOT NULL,
    max_attempts integer NOT NULL,
    max_duration double precision,
    attempt_count integer DEFAULT 0 NOT NULL,
    current_attempt_id text COLLATE pg_catalog."C",
    worker_id text COLLATE pg_catalog."C",
    order_at timestamp with time zone NOT NULL,
    available_at timestamp with time zone NOT NULL,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone,
    delayed_until timestamp with time zone,
    ttl double precision,
    expired_at timestamp with time zone,
    expires_at timestamp with time zone,
    suspended boolean DEFAULT false NOT NULL,
    waited_on boolean DEFAULT false NOT NULL,
    interruptions integer DEFAULT 0 NOT NULL,
    retention_s double precision,
    schedule_id text COLLATE pg_catalog."C",
    schedule_slot timestamp with time zone,
    trace_context jsonb,
    rate_limit_key text COLLATE pg_catalog."C",
    rate_cost integer,
    CONSTRAINT runs_concurrency_key_check CHECK (((length(concurrency_key) >= 1) AND (length(concurrency_key) <= 256))),
    CONSTRAINT runs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT runs_max_duration_check CHECK ((max_duration > (0)::double precision)),
    CONSTRAINT runs_payload_size CHECK ((pg_column_size(payload) <= 10485760)),
    CONSTRAINT runs_rate_cost_check CHECK ((rate_cost >= 1)),
    CONSTRAINT runs_rate_limit_key_check CHECK (((length(rate_limit_key) >= 1) AND (length(rate_limit_key) <= 256))),
    CONSTRAINT runs_retention_s_check CHECK (((retention_s > (0)::double precision) AND (retention_s < 'Infinity'::double precision))),
    CONSTRAINT runs_ttl_check CHECK ((ttl > (0)::double precision))
)
WITH (autovacuum_vacuum_scale_factor='0.02', autovacuum_vacuum_threshold='1000', autovacuum_vacuum_insert_scale_factor='0.02', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_delay='0');

CREATE FUNCTION skiplock.current_run(p_attempt_id text) RETURNS skiplock.runs
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT r.* INTO v_run FROM skiplock.runs r
     WHERE r.id = (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id)
       AND r.current_attempt_id = p_attempt_id AND r.status = 'EXECUTING'
       FOR NO KEY UPDATE;
    RETURN v_run;
END;
$$;

CREATE FUNCTION skiplock.deactivate_schedule(p_id text) RETURNS skiplock.schedules
    LANGUAGE sql
    AS $$ SELECT skiplock.set_schedule_active(p_id, false) $$;

CREATE FUNCTION skiplock.debounce_trigger(p_task text, p_payload jsonb, p_options jsonb) RETURNS TABLE(run_id text, run_status skiplock.run_status, is_cached boolean)
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.delete_attempts_of_deleted_runs() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    DELETE FROM skiplock.attempts a USING deleted_runs d WHERE a.run_id = d.id;
    RETURN NULL;
END;
$$;

CREATE FUNCTION skiplock.delete_runs(p_ids text[]) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_points  text[];
    v_batches text[];
    v_count   integer;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN 0;
    END IF;
    -- what goes with them, read before the cascades remove the edges
    v_points := ARRAY(
        SELECT e.waitpoint_id FROM skiplock.run_waitpoints e WHERE e.run_id = ANY (p_ids)
        UNION
        SELECT s.waitpoint_id FROM skiplock.run_steps s
         WHERE s.run_id = ANY (p_ids) AND s.waitpoint_id IS NOT NULL
        UNION
        SELECT w.id FROM skiplock.waitpoints w WHERE w.type = 'RUN' AND w.run_id = ANY (p_ids));
    v_batches := ARRAY(
        SELECT DISTINCT r.batch_id FROM skiplock.runs r
         WHERE r.id = ANY (p_ids) AND r.batch_id IS NOT NULL);
    DELETE FROM skiplock.runs r WHERE r.id = ANY (p_ids);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    -- their logs: by run id (no foreign key; see migration 0019)
    DELETE FROM skiplock.run_logs l WHERE l.run_id = ANY (p_ids);
    DELETE FROM skiplock.alerts a WHERE a.run_id = ANY (p_ids);
    DELETE FROM skiplock.debounces d WHERE d.run_id = ANY (p_ids);
    IF cardinality(v_points) > 0 THEN
        DELETE FROM skiplock.waitpoints w
         WHERE w.id = ANY (v_points) AND w.status = 'COMPLETED'
           AND NOT EXISTS (SELECT 1 FROM skiplock.run_waitpoints e WHERE e.waitpoint_id = w.id)
           AND NOT EXISTS (SELECT 1 FROM skiplock.run_steps s WHERE s.waitpoint_id = w.id);
    END IF;
    IF cardinality(v_batches) > 0 THEN
        DELETE FROM skiplock.batches b
         WHERE b.id = ANY (v_batches)
           AND NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = ANY (b.run_ids));
    END IF;
    RETURN v_count;
END;
$$;

CREATE FUNCTION skiplock.delete_schedule(p_id text) RETURNS void
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.dequeue(p_worker_id text, p_version text, p_tasks text[], p_queues text[], p_limit integer) RETURNS TABLE(run_id text, task_identifier text, payload jsonb, metadata jsonb, attempt_count integer, max_attempts integer, max_duration double precision)
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_ids text[];
BEGIN
    IF NOT skiplock.worker_is_active(p_worker_id) THEN
        RETURN;
    END IF;
    v_ids := (skiplock.lock_ready(p_version, p_tasks, p_queues, p_limit)).ids;
    PERFORM skiplock.notify_runs(v_ids);
    RETURN QUERY
    UPDATE skiplock.runs r
       SET status = 'DEQUEUED', version = p_version, worker_id = p_worker_id, updated_at = v_now
     WHERE r.id = ANY (v_ids)
    RETURNING r.id, r.task_identifier, r.payload, r.metadata, r.attempt_count,
              r.max_attempts, r.max_duration;
END;
$$;

CREATE FUNCTION skiplock.due(p_chore text, p_every interval) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    INSERT INTO skiplock.maintenance AS m (chore, last_run_at) VALUES (p_chore, v_now)
    ON CONFLICT (chore) DO UPDATE SET last_run_at = v_now
     WHERE m.last_run_at <= v_now - p_every;
    RETURN FOUND;
END;
$$;

CREATE FUNCTION skiplock.executing_run(p_attempt_id text) RETURNS skiplock.runs
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT r.* INTO v_run FROM skiplock.runs r
     WHERE r.id = (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id)
       AND r.current_attempt_id = p_attempt_id AND r.status = 'EXECUTING'
       FOR UPDATE;
    RETURN v_run;
END;
$$;

CREATE FUNCTION skiplock.fail_attempt(p_attempt_id text, p_error jsonb, p_status skiplock.run_status DEFAULT 'FAILED'::skiplock.run_status, p_retry_delay double precision DEFAULT NULL::double precision) RETURNS skiplock.run_status
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now    timestamptz := skiplock.now();
    v_run    skiplock.runs;
    v_status skiplock.run_status;
BEGIN
    IF p_status NOT IN ('FAILED', 'TIMED_OUT', 'SYSTEM_FAILURE') THEN
        PERFORM skiplock.invalid(format('an attempt cannot fail with status %s', p_status));
    END IF;
    v_run := skiplock.executing_run(p_attempt_id);
    IF v_run.id IS NULL THEN
        RETURN NULL;
    END IF;
    v_status := CASE WHEN p_status = 'FAILED' AND p_retry_delay IS NOT NULL
                          AND v_run.attempt_count < v_run.max_attempts
                     THEN 'QUEUED' ELSE p_status END;

    UPDATE skiplock.attempts
       SET status = (CASE WHEN p_status = 'TIMED_OUT' THEN 'TIMED_OUT' ELSE 'FAILED' END)::skiplock.attempt_status,
           error = p_error, finished_at = v_now
     WHERE id = p_attempt_id;

    UPDATE skiplock.runs r
       SET status = v_status, error = p_error, updated_at = v_now, worker_id = NULL,
           available_at = CASE WHEN v_status = 'QUEUED'
                               THEN v_now + make_interval(secs => greatest(p_retry_delay, 0))
                               ELSE r.available_at END,
           finished_at = CASE WHEN v_status = 'QUEUED' THEN NULL ELSE v_now END
     WHERE r.id = v_run.id;
    PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
    IF v_status = 'QUEUED' AND p_retry_delay <= 0 THEN
        PERFORM skiplock.wake(v_run.queue);
    END IF;
    RETURN v_status;
END;
$$;

CREATE FUNCTION skiplock.fire_schedule(p_s skiplock.schedules, p_slot timestamp with time zone) RETURNS text
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.fire_schedules(p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.gen_id(p_prefix text) RETURNS text
    LANGUAGE sql
    AS $$
    SELECT p_prefix || '_'
        || lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0')
        || lpad(to_hex(nextval('skiplock.id_seq')), 4, '0')
        || lpad(to_hex((random() * 9223372036854775807)::bigint), 16, '0')
$$;

CREATE FUNCTION skiplock.heartbeat(p_worker_id text, p_attempt_ids text[]) RETURNS text[]
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    UPDATE skiplock.workers
       SET last_heartbeat_at = v_now, lease_expires_at = v_now + make_interval(secs => lease_seconds)
     WHERE id = p_worker_id AND lost_at IS NULL AND stopped_at IS NULL;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    PERFORM skiplock.release_lost_attempts(p_worker_id, coalesce(p_attempt_ids, '{}'));
    RETURN ARRAY(
        SELECT i.id FROM unnest(p_attempt_ids) AS i(id)
        EXCEPT
        SELECT a.id FROM skiplock.attempts a
         WHERE a.id = ANY (p_attempt_ids) AND a.status = 'EXECUTING');
END;
$$;

CREATE FUNCTION skiplock.insert_runs(p_task text, p_items jsonb, p_options jsonb) RETURNS TABLE(run_id text, run_status skiplock.run_status, run_queue text)
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.interrupt_attempt(p_attempt_id text, p_error jsonb, p_max integer DEFAULT 10) RETURNS skiplock.run_status
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_run skiplock.runs;
BEGIN
    v_run := skiplock.executing_run(p_attempt_id);
    IF v_run.id IS NULL THEN
        RETURN NULL;
    END IF;
    UPDATE skiplock.runs SET interruptions = interruptions + 1 WHERE id = v_run.id;
    IF v_run.interruptions + 1 >= p_max THEN
        RETURN skiplock.fail_attempt(
            p_attempt_id,
            p_error || jsonb_build_object('message', format(
                'interrupted by a worker shutdown %s times (%s); the task outlives the '
                'shutdown grace period', v_run.interruptions + 1, p_error->>'message')),
            'FAILED', NULL);
    END IF;
    UPDATE skiplock.attempts SET status = 'SUSPENDED', error = p_error WHERE id = p_attempt_id;
    UPDATE skiplock.runs
       SET status = 'QUEUED', suspended = true, worker_id = NULL, available_at = v_now,
           updated_at = v_now
     WHERE id = v_run.id;
    PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
    PERFORM skiplock.wake(v_run.queue);
    RETURN 'QUEUED';
END;
$$;

CREATE FUNCTION skiplock.invalid(p_message text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SL004', MESSAGE = p_message;
END;
$$;

CREATE FUNCTION skiplock.is_final(p_status skiplock.run_status) RETURNS boolean
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT p_status IN ('COMPLETED', 'CANCELED', 'FAILED', 'TIMED_OUT', 'CRASHED',
                        'SYSTEM_FAILURE', 'EXPIRED')
$$;

CREATE FUNCTION skiplock.iso_utc(p_at timestamp with time zone) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

CREATE FUNCTION skiplock.latest_cron_slot(p_cron text, p_tz text, p_from timestamp with time zone, p_now timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE
    AS $$
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

CREATE TABLE skiplock.attempts (
    id text NOT NULL COLLATE pg_catalog."C",
    run_id text NOT NULL COLLATE pg_catalog."C",
    number integer NOT NULL,
    status skiplock.attempt_status NOT NULL,
    worker_id text NOT NULL COLLATE pg_catalog."C",
    started_at timestamp with time zone NOT NULL,
    finished_at timestamp with time zone,
    output jsonb,
    error jsonb
)
WITH (fillfactor='50', autovacuum_vacuum_scale_factor='0.02', autovacuum_vacuum_threshold='1000', autovacuum_vacuum_insert_scale_factor='0.02', autovacuum_analyze_scale_factor='0.02', autovacuum_vacuum_cost_delay='0');

CREATE VIEW skiplock.run_details AS
 SELECT id,
    task_identifier,
    status,
    payload,
    output,
    error,
    metadata,
    tags,
    idempotency_key,
    batch_id,
    parent_id,
    root_id,
    depth,
    queue,
    concurrency_key,
    priority,
    version,
    attempt_count,
    created_at,
    updated_at,
    started_at,
    finished_at,
    delayed_until,
    ttl,
    expired_at,
    COALESCE(( SELECT jsonb_agg(jsonb_build_object('id', a.id, 'number', a.number, 'status', a.status, 'started_at', a.started_at, 'finished_at', a.finished_at, 'output', a.output, 'error', a.error, 'worker_id', a.worker_id) ORDER BY a.number) AS jsonb_agg
           FROM skiplock.attempts a
          WHERE (a.run_id = r.id)), '[]'::jsonb) AS attempts,
    schedule_id
   FROM skiplock.runs r;

CREATE FUNCTION skiplock.list_runs(p_status skiplock.run_status[] DEFAULT NULL::skiplock.run_status[], p_tasks text[] DEFAULT NULL::text[], p_tags text[] DEFAULT NULL::text[], p_batch text DEFAULT NULL::text, p_created_from timestamp with time zone DEFAULT NULL::timestamp with time zone, p_created_to timestamp with time zone DEFAULT NULL::timestamp with time zone, p_after text DEFAULT NULL::text, p_limit integer DEFAULT 20, p_schedule text DEFAULT NULL::text) RETURNS SETOF skiplock.run_details
    LANGUAGE plpgsql STABLE
    SET plan_cache_mode TO 'force_custom_plan'
    SET jit TO 'off'
    AS $$
DECLARE
    v_unknown text;
BEGIN
    IF p_limit NOT BETWEEN 1 AND 10000 THEN
        PERFORM skiplock.invalid(format('limit must be 1 to 10000, got %s', p_limit));
    END IF;
    SELECT t INTO v_unknown FROM unnest(p_tasks) t
     WHERE NOT EXISTS (SELECT 1 FROM skiplock.deployment_tasks d WHERE d.task_identifier = t)
       AND NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.task_identifier = t)
     LIMIT 1;
    IF v_unknown IS NOT NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'SL003', MESSAGE = format('unknown task %L', v_unknown);
    END IF;
    RETURN QUERY
    SELECT d.* FROM skiplock.run_details d
     WHERE (p_status IS NULL OR d.status = ANY (p_status))
       AND (p_tasks IS NULL OR d.task_identifier = ANY (p_tasks))
       AND (p_tags IS NULL OR (d.tags && p_tags AND d.tags <> '{}'))
       AND (p_batch IS NULL OR (d.batch_id = p_batch AND d.id = ANY (
               (SELECT b.run_ids FROM skiplock.batches b WHERE b.id = p_batch)::text[])))
       AND (p_created_from IS NULL OR d.created_at >= p_created_from)
       AND (p_created_to IS NULL OR d.created_at < p_created_to)
       AND (p_after IS NULL OR d.id < p_after)
       AND (p_schedule IS NULL OR d.schedule_id = p_schedule)
     ORDER BY d.id DESC
     LIMIT p_limit;
END;
$$;

CREATE FUNCTION skiplock.list_schedules(p_tasks text[] DEFAULT NULL::text[], p_active boolean DEFAULT NULL::boolean, p_type text DEFAULT NULL::text, p_external_id text DEFAULT NULL::text, p_after text DEFAULT NULL::text, p_limit integer DEFAULT 20) RETURNS SETOF skiplock.schedules
    LANGUAGE plpgsql STABLE
    AS $$
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

CREATE FUNCTION skiplock.lock_parent(p_parent_id text) RETURNS skiplock.runs
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.lock_ready(p_version text, p_tasks text[], p_queues text[], p_limit integer, OUT ids text[], OUT retry_in double precision) RETURNS record
    LANGUAGE plpgsql
    SET enable_sort TO 'off'
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_latest   text[];
    v_unit     record;
    v_take     integer;
    v_holders  integer;
    v_keyed    boolean := false;  -- a unit with a rate_limit_key was visited
    v_key      text;              -- rate-limited units: the rate key
    v_interval double precision;  -- period / limit, seconds
    v_clock    timestamptz;
    v_tat      timestamptz;
    v_budget   double precision;
    v_run      record;
    v_taken    integer;
BEGIN
    ids := '{}';
    -- tasks whose newest deployment is this worker's version
    v_latest := ARRAY(
        SELECT t FROM unnest(p_tasks) t
         WHERE (SELECT d.version FROM skiplock.deployment_tasks d
                 WHERE d.task_identifier = t
                 ORDER BY d.deployed_at DESC, d.version DESC LIMIT 1) = p_version);
    FOR v_unit IN
        WITH RECURSIVE units AS (  -- skip scan: the head run of each unit
            (SELECT r.queue, coalesce(r.concurrency_key, '') AS ckey,
                    coalesce(r.rate_limit_key, '') AS rkey, r.order_at, r.id
               FROM skiplock.runs r WHERE r.status = 'QUEUED'
              ORDER BY r.queue, coalesce(r.concurrency_key, ''), coalesce(r.rate_limit_key, ''),
                       r.order_at, r.id
              LIMIT 1)
            UNION ALL
            SELECT n.queue, n.ckey, n.rkey, n.order_at, n.id FROM units u CROSS JOIN LATERAL (
                SELECT r.queue, coalesce(r.concurrency_key, '') AS ckey,
                       coalesce(r.rate_limit_key, '') AS rkey, r.order_at, r.id
                  FROM skiplock.runs r
                 WHERE r.status = 'QUEUED'
                   AND (r.queue, coalesce(r.concurrency_key, ''), coalesce(r.rate_limit_key, ''))
                       > (u.queue, u.ckey, u.rkey)
                 ORDER BY r.queue, coalesce(r.concurrency_key, ''),
                          coalesce(r.rate_limit_key, ''), r.order_at, r.id
                 LIMIT 1) n)
        SELECT u.queue, u.ckey, u.rkey, u.order_at, u.id AS head_id, q.concurrency_limit,
               q.rate_limit, q.rate_period_s, q.rate_burst
          FROM units u LEFT JOIN skiplock.queues q ON q.name = u.queue
         WHERE NOT coalesce(q.paused, false) AND (p_queues IS NULL OR u.queue = ANY (p_queues))
         ORDER BY u.order_at
    LOOP
        v_take := p_limit - cardinality(ids);
        EXIT WHEN v_take <= 0;
        IF v_unit.concurrency_limit IS NOT NULL THEN
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(
                hashtext('skiplock.unit'), hashtext(v_unit.queue || chr(31) || v_unit.ckey));
            SELECT count(*) INTO v_holders FROM skiplock.runs r
             WHERE r.queue = v_unit.queue AND coalesce(r.concurrency_key, '') = v_unit.ckey
               AND r.status IN ('DEQUEUED', 'EXECUTING');
            v_keyed := v_keyed OR v_unit.rkey <> '';
            IF v_keyed THEN  -- this call may have taken runs of the unit under other rate keys
                v_holders := v_holders + (
                    SELECT count(*) FROM skiplock.runs r
                     WHERE r.id = ANY (ids) AND r.queue = v_unit.queue
                       AND coalesce(r.concurrency_key, '') = v_unit.ckey);
            END IF;
            v_take := least(v_take, v_unit.concurrency_limit - v_holders);
            CONTINUE WHEN v_take <= 0;
        END IF;
        IF v_unit.rate_limit IS NULL THEN
            ids := ids || ARRAY(
                SELECT r.id FROM skiplock.runs r
                 WHERE r.queue = v_unit.queue AND coalesce(r.concurrency_key, '') = v_unit.ckey
                   AND coalesce(r.rate_limit_key, '') = v_unit.rkey
                   AND (r.order_at, r.id) >= (v_unit.order_at, v_unit.head_id)  -- see above
                   AND r.status = 'QUEUED' AND r.available_at <= v_now
                   AND (r.expires_at IS NULL OR r.expires_at > v_now)  -- never start an expired run
                   AND ((r.version IS NULL AND r.task_identifier = ANY (v_latest))
                        OR (r.version = p_version AND r.task_identifier = ANY (p_tasks)))
                 ORDER BY r.order_at, r.id
                 LIMIT v_take
                 FOR UPDATE SKIP LOCKED);
            CONTINUE;
        END IF;

        -- a rate-limited unit: GCRA on its rate key
        v_key := CASE WHEN v_unit.rkey <> '' THEN v_unit.rkey ELSE v_unit.ckey END;
        v_interval := v_unit.rate_period_s / v_unit.rate_limit;
        IF NOT pg_try_advisory_xact_lock(
                hashtext('skiplock.rate'), hashtext(v_unit.queue || chr(31) || v_key)) THEN
            -- another worker is admitting this key: look again soon (it may leave budget)
            retry_in := least(retry_in, v_interval, 0.01);
            CONTINUE;
        END IF;
        -- the time of the admission, not of the transaction's start: attempts are stamped
        -- after it (skiplock.clock, in complete_and_claim), so their start times keep its
        -- spacing
        v_clock := skiplock.clock();
        SELECT b.tat INTO v_tat FROM skiplock.rate_buckets b
         WHERE b.queue = v_unit.queue AND b.key = v_key;
        v_tat := skiplock.rate_schedule(v_tat, v_clock, v_interval);
        v_budget := skiplock.rate_budget(v_tat, v_clock, v_interval, v_unit.rate_burst);
        IF v_budget < 1 - 1e-9 THEN  -- not even one unit: skipped until it refills
            IF (1 - v_budget) * v_interval < coalesce(retry_in, 'Infinity') AND EXISTS (
                -- a run this worker could take then: worth a claim at that time
                SELECT 1 FROM skiplock.runs r
                 WHERE r.queue = v_unit.queue AND coalesce(r.concurrency_key, '') = v_unit.ckey
                   AND coalesce(r.rate_limit_key, '') = v_unit.rkey AND r.status = 'QUEUED'
                   AND ((r.version IS NULL AND r.task_identifier = ANY (v_latest))
                        OR (r.version = p_version AND r.task_identifier = ANY (p_tasks)))) THEN
                retry_in := least(retry_in, (1 - v_budget) * v_interval);
            END IF;
            CONTINUE;
        END IF;
        v_taken := 0;
        FOR v_run IN
            SELECT r.id, coalesce(r.rate_cost, 1) AS cost FROM skiplock.runs r
             WHERE r.queue = v_unit.queue AND coalesce(r.concurrency_key, '') = v_unit.ckey
               AND coalesce(r.rate_limit_key, '') = v_unit.rkey
               AND (r.order_at, r.id) >= (v_unit.order_at, v_unit.head_id)
               AND r.status = 'QUEUED' AND r.available_at <= v_now
               AND (r.expires_at IS NULL OR r.expires_at > v_now)
               AND ((r.version IS NULL AND r.task_identifier = ANY (v_latest))
                    OR (r.version = p_version AND r.task_identifier = ANY (p_tasks)))
             ORDER BY r.order_at, r.id
             -- each run costs at least 1: one past the budget says when the next may start
             LIMIT least(v_take, floor(v_budget + 1e-9)::integer + 1)
             FOR UPDATE SKIP LOCKED
        LOOP
            -- a run costing more than the burst waits for a full budget, then goes into debt
            IF least(v_run.cost, v_unit.rate_burst) > v_budget + 1e-9 THEN
                retry_in := least(retry_in,
                                  (least(v_run.cost, v_unit.rate_burst) - v_budget) * v_interval);
                EXIT;
            END IF;
            ids := ids || v_run.id;
            v_budget := v_budget - v_run.cost;
            v_tat := v_tat + make_interval(secs => v_run.cost * v_interval);
            v_taken := v_taken + 1;
        END LOOP;
        IF v_taken > 0 THEN
            INSERT INTO skiplock.rate_buckets AS b (queue, key, tat)
            VALUES (v_unit.queue, v_key, v_tat)
            ON CONFLICT (queue, key) DO UPDATE SET tat = excluded.tat;
        END IF;
    END LOOP;
END;
$$;

CREATE FUNCTION skiplock.new_run(p_task text, p_payload jsonb, p_run skiplock.run_values, p_options jsonb, p_deployed boolean, p_parent skiplock.runs, p_now timestamp with time zone) RETURNS skiplock.runs
    LANGUAGE sql
    AS $$
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

CREATE FUNCTION skiplock.next_cron_slot(p_cron text, p_tz text, p_after timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql STABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.notify_run_logs(p_ids text[]) RETURNS void
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_ids  text[];
    v_from integer := 1;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    v_ids := ARRAY(SELECT DISTINCT s.key FROM skiplock.subscriptions s
                    WHERE s.kind = 'logs' AND s.key = ANY (p_ids));
    WHILE v_from <= cardinality(v_ids) LOOP
        PERFORM pg_notify('skiplock_logs', array_to_string(v_ids[v_from:v_from + 199], ','));
        v_from := v_from + 200;
    END LOOP;
END;
$$;

CREATE FUNCTION skiplock.notify_runs(p_ids text[]) RETURNS void
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    SET plan_cache_mode TO 'force_generic_plan'
    AS $$
DECLARE
    v_from    integer := 1;
    v_group   record;
    v_payload text;    -- the payload being written, without its closing brackets
    v_kind    text;    -- its last group's kind and key
    v_key     text;
    v_open    text;    -- the group's member opened: "kind":[ or "kind":{"key":[
    v_piece   integer;
    v_ids     text;    -- a piece's ids, JSON strings separated by commas
    v_add     text;
    v_close   text;    -- what closes the last member: ] or ]}
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0
       OR NOT EXISTS (SELECT 1 FROM skiplock.subscriptions) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM skiplock.subscriptions s WHERE s.kind = 'all') THEN
        WHILE v_from <= cardinality(p_ids) LOOP
            PERFORM pg_notify('skiplock_runs',
                              json_build_object('ids', p_ids[v_from:v_from + 199])::text);
            v_from := v_from + 200;
        END LOOP;
        RETURN;
    END IF;
    FOR v_group IN
        WITH r AS MATERIALIZED (
            SELECT r.id, r.batch_id, r.tags FROM skiplock.runs r WHERE r.id = ANY (p_ids)
        ), k AS MATERIALIZED (  -- every key a run of p_ids may be watched by
            SELECT 'run' AS kind, r.id AS key, r.id FROM r
            UNION ALL
            SELECT 'batch', r.batch_id, r.id FROM r WHERE r.batch_id IS NOT NULL
            UNION ALL
            SELECT 'tag', t.tag, r.id FROM r, unnest(r.tags) AS t(tag)
        ), w AS MATERIALIZED (  -- those watched: one scan of the index for them all
            SELECT DISTINCT s.kind, s.key FROM skiplock.subscriptions s
             WHERE s.kind IN ('run', 'batch', 'tag') AND s.key = ANY (ARRAY(SELECT k.key FROM k))
        )
        SELECT k.kind, CASE WHEN k.kind = 'run' THEN '' ELSE k.key END AS key,
               array_agg(k.id ORDER BY k.id) AS ids
          FROM k JOIN w ON w.kind = k.kind AND w.key = k.key
         GROUP BY 1, 2
         ORDER BY 1, 2
    LOOP
        -- the group, in pieces of at most 100 ids, continues the payload: in the array of
        -- the same key, in the object of the same kind, or as a new member; if that would
        -- reach 8000 bytes, the payload goes and the piece starts the next
        v_open := to_json(v_group.kind)::text || ':'
                  || CASE WHEN v_group.kind = 'run' THEN '['
                          ELSE '{' || to_json(v_group.key)::text || ':[' END;
        FOR v_piece IN 0 .. (cardinality(v_group.ids) - 1) / 100 LOOP
            v_ids := array_to_json(v_group.ids[v_piece * 100 + 1 : v_piece * 100 + 100])::text;
            v_ids := substr(v_ids, 2, length(v_ids) - 2);
            v_add := CASE WHEN v_payload IS NULL THEN '{' || v_open
                          WHEN v_kind <> v_group.kind THEN v_close || ',' || v_open
                          WHEN v_key <> v_group.key
                              THEN '],' || to_json(v_group.key)::text || ':['
                          ELSE ',' END || v_ids;
            IF v_payload IS NOT NULL
               AND octet_length(v_payload) + octet_length(v_add) + 3 > 7999 THEN
                PERFORM pg_notify('skiplock_runs', v_payload || v_close || '}');
                v_add := '{' || v_open || v_ids;
                v_payload := '';
            END IF;
            v_payload := coalesce(v_payload, '') || v_add;
            v_kind := v_group.kind;
            v_key := v_group.key;
            v_close := CASE WHEN v_group.kind = 'run' THEN ']' ELSE ']}' END;
        END LOOP;
    END LOOP;
    IF v_payload IS NOT NULL THEN
        PERFORM pg_notify('skiplock_runs', v_payload || v_close || '}');
    END IF;
END;
$$;

CREATE FUNCTION skiplock.now() RETURNS timestamp with time zone
    LANGUAGE sql STABLE
    AS $$
    SELECT coalesce(nullif(current_setting('skiplock.fake_now', true), '')::timestamptz,
                    pg_catalog.now())
$$;

CREATE FUNCTION skiplock.on_run_failed() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    INSERT INTO skiplock.alerts (id, run_id, task_identifier, status, created_at, available_at)
    VALUES (skiplock.gen_id('alert'), NEW.id, NEW.task_identifier, NEW.status,
            coalesce(NEW.finished_at, v_now), v_now);
    IF EXISTS (SELECT 1 FROM skiplock.workers w  -- a polling one hears nothing (0027)
                WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND NOT w.polls
                  AND w.lease_expires_at > v_now) THEN
        PERFORM pg_notify('skiplock_alerts', '');
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION skiplock.on_waited_run_final() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_wp skiplock.waitpoints;
BEGIN
    IF NOT skiplock.is_final(NEW.status) OR skiplock.is_final(OLD.status) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_wp FROM skiplock.waitpoints w WHERE w.type = 'RUN' AND w.run_id = NEW.id;
    IF FOUND THEN
        PERFORM skiplock.complete_waitpoint(v_wp.id, skiplock.run_result(NEW),
                                            NEW.status <> 'COMPLETED');
    END IF;
    IF NEW.batch_id IS NOT NULL THEN
        UPDATE skiplock.waitpoints w SET pending_runs = w.pending_runs - 1
         WHERE w.type = 'BATCH' AND w.batch_id = NEW.batch_id AND w.status = 'PENDING'
        RETURNING * INTO v_wp;
        IF FOUND AND v_wp.pending_runs <= 0 THEN
            -- a statement of its own: its snapshot, taken after the count-off above (which
            -- waited for any sibling's count-off to commit), sees every child final
            UPDATE skiplock.waitpoints w SET results = skiplock.batch_results(NEW.batch_id)
             WHERE w.id = v_wp.id;
            PERFORM skiplock.complete_waitpoint(v_wp.id, to_jsonb(NEW.batch_id), false);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

CREATE FUNCTION skiplock.option_type_problem(p_opts jsonb) RETURNS text
    LANGUAGE plpgsql IMMUTABLE
    AS $$
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

CREATE FUNCTION skiplock.parse_cron(p_cron text) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
    AS $$
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

CREATE FUNCTION skiplock.pause_queue(p_name text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM skiplock.queue_for_update(p_name);
    UPDATE skiplock.queues SET paused = true, updated_at = skiplock.now() WHERE name = p_name;
    RETURN true;
END;
$$;

CREATE FUNCTION skiplock.peer_workers(p_worker_id text) RETURNS integer
    LANGUAGE sql STABLE
    AS $$
    SELECT count(*)::integer FROM skiplock.workers w
     WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND w.lease_expires_at > skiplock.now()
       AND w.id <> p_worker_id
$$;

CREATE FUNCTION skiplock.prune_registry(p_keep interval DEFAULT '1 day'::interval, p_batch integer DEFAULT 100) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_before  timestamptz := skiplock.now() - p_keep;
    v_workers integer;
    v_queues  integer;
    v_keys    integer;
BEGIN
    DELETE FROM skiplock.workers w
     WHERE w.id IN (
        SELECT x.id FROM skiplock.workers x
         WHERE coalesce(x.stopped_at, x.lost_at) < v_before
           AND NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.worker_id = x.id)
         LIMIT p_batch
           FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_workers = ROW_COUNT;

    -- one pass over the unfinished runs for all candidates, not one per queue
    DELETE FROM skiplock.queues q
     WHERE q.name IN (
        SELECT c.name FROM skiplock.queues c
         WHERE c.updated_at < v_before AND c.concurrency_limit IS NULL AND c.retention_s IS NULL
           AND c.rate_limit IS NULL AND NOT c.paused
           AND NOT EXISTS (SELECT 1 FROM skiplock.deployment_tasks d WHERE d.queue = c.name)
           AND c.name NOT IN (
               SELECT r.queue FROM skiplock.runs r
                WHERE r.status IN ('PENDING_VERSION', 'DELAYED', 'QUEUED', 'DEQUEUED',
                                   'EXECUTING', 'WAITING'))
         LIMIT p_batch
           FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_queues = ROW_COUNT;

    DELETE FROM skiplock.rate_buckets b
     WHERE (b.queue, b.key) IN (
        SELECT x.queue, x.key FROM skiplock.rate_buckets x
         WHERE x.tat < skiplock.now() - interval '1 minute'
         LIMIT 100 * p_batch
           FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_keys = ROW_COUNT;
    RETURN jsonb_build_object('workers', v_workers, 'queues', v_queues, 'rate_keys', v_keys);
END;
$$;

CREATE FUNCTION skiplock.purge(p_limit integer DEFAULT 500) RETURNS integer
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_sort TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_mark timestamptz;
    v_ids  text[];
    v_top  timestamptz;
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 100000 THEN
        PERFORM skiplock.invalid(format('limit must be 1 to 100000, got %s', p_limit));
    END IF;
    SELECT CASE WHEN m.last_run_at <= v_now - interval '10 minutes' OR m.mark > v_now
                THEN '-infinity' ELSE m.mark END
      INTO v_mark
      FROM skiplock.maintenance m WHERE m.chore = 'purge' FOR UPDATE SKIP LOCKED;
    IF NOT FOUND THEN
        RETURN 0;  -- another purge is at work
    END IF;
    SELECT array_agg(x.id), max(x.at) INTO v_ids, v_top FROM (
        SELECT r.id, skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at) AS at
          FROM skiplock.runs r
         WHERE skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
               >= v_mark
           AND skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
               < v_now
           AND r.finished_at IS NOT NULL AND r.retention_s IS NOT NULL
           AND (NOT r.waited_on OR NOT skiplock.still_awaited(r.id, r.batch_id))
         ORDER BY skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
         LIMIT p_limit
           FOR UPDATE OF r SKIP LOCKED) x;
    -- last_run_at: when the scan last started from the beginning
    UPDATE skiplock.maintenance m
       SET mark = coalesce(v_top, v_mark),
           last_run_at = CASE WHEN v_mark = '-infinity' THEN v_now ELSE m.last_run_at END
     WHERE m.chore = 'purge';
    RETURN skiplock.delete_runs(v_ids);
END;
$$;

CREATE FUNCTION skiplock.purge_at(p_finished_at timestamp with time zone, p_retention_s double precision, p_key_expires_at timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$
    SELECT greatest(((p_finished_at AT TIME ZONE 'UTC') + p_retention_s * interval '1 second')
                    AT TIME ZONE 'UTC',
                    p_key_expires_at)
$$;

CREATE FUNCTION skiplock.purge_runs(p_before timestamp with time zone, p_statuses skiplock.run_status[] DEFAULT NULL::skiplock.run_status[], p_tasks text[] DEFAULT NULL::text[], p_limit integer DEFAULT 1000, p_dry_run boolean DEFAULT false) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_ids      text[];
    v_count    bigint;
BEGIN
    IF p_limit NOT BETWEEN 1 AND 100000 THEN
        PERFORM skiplock.invalid(format('limit must be 1 to 100000, got %s', p_limit));
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(p_statuses) s WHERE NOT skiplock.is_final(s)) THEN
        PERFORM skiplock.invalid('only finished runs are purged: statuses must be final');
    END IF;
    IF p_dry_run THEN
        SELECT count(*) INTO v_count FROM skiplock.runs r
         WHERE skiplock.purgeable(r, p_before, p_statuses, p_tasks, v_now);
        RETURN v_count;
    END IF;
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE skiplock.purgeable(r, p_before, p_statuses, p_tasks, v_now)
         ORDER BY r.id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED);
    RETURN skiplock.delete_runs(v_ids);
END;
$$;

CREATE FUNCTION skiplock.purge_tokens(p_keep interval, p_limit integer DEFAULT 1000) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_count integer;
BEGIN
    DELETE FROM skiplock.waitpoints w
     WHERE w.id IN (
        SELECT t.id FROM skiplock.waitpoints t
         WHERE t.type = 'TOKEN' AND t.status = 'COMPLETED'
           AND t.completed_at < skiplock.now() - p_keep
           AND NOT EXISTS (SELECT 1 FROM skiplock.run_waitpoints e WHERE e.waitpoint_id = t.id)
           AND NOT EXISTS (SELECT 1 FROM skiplock.run_steps s WHERE s.waitpoint_id = t.id)
         ORDER BY t.completed_at
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END;
$$;

CREATE FUNCTION skiplock.purgeable(p_run skiplock.runs, p_before timestamp with time zone, p_statuses skiplock.run_status[], p_tasks text[], p_now timestamp with time zone) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT skiplock.is_final(p_run.status)
       AND (p_statuses IS NULL OR p_run.status = ANY (p_statuses))
       AND p_run.finished_at < p_before
       AND (p_tasks IS NULL OR p_run.task_identifier = ANY (p_tasks))
       -- a key with a TTL dedupes until it ends; one without lasts as long as its run
       AND NOT coalesce(p_run.idempotency_key IS NOT NULL AND NOT p_run.idempotency_key_released
                        AND p_run.idempotency_key_expires_at > p_now, false)
       AND NOT (p_run.waited_on AND skiplock.still_awaited(p_run.id, p_run.batch_id))
$$;

CREATE TABLE skiplock.queues (
    name text NOT NULL COLLATE pg_catalog."C",
    concurrency_limit integer,
    paused boolean DEFAULT false NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    retention_s double precision,
    rate_limit integer,
    rate_period_s double precision,
    rate_burst integer,
    CONSTRAINT queues_concurrency_limit_check CHECK ((concurrency_limit >= 1)),
    CONSTRAINT queues_rate_burst_check CHECK ((rate_burst >= 1)),
    CONSTRAINT queues_rate_limit_check CHECK ((rate_limit >= 1)),
    CONSTRAINT queues_rate_period_s_check CHECK (((rate_period_s > (0)::double precision) AND (rate_period_s < 'Infinity'::double precision))),
    CONSTRAINT queues_rate_whole CHECK ((((rate_limit IS NULL) = (rate_period_s IS NULL)) AND ((rate_limit IS NULL) = (rate_burst IS NULL)))),
    CONSTRAINT queues_retention_s_check CHECK ((retention_s > (0)::double precision))
);

CREATE FUNCTION skiplock.queue_for_update(p_name text) RETURNS skiplock.queues
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_queue skiplock.queues;
BEGIN
    IF EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.queue = p_name) THEN
        INSERT INTO skiplock.queues (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    END IF;
    SELECT * INTO v_queue FROM skiplock.queues q WHERE q.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL006', MESSAGE = format('queue %L does not exist', p_name);
    END IF;
    RETURN v_queue;
END;
$$;

CREATE FUNCTION skiplock.rate_budget(p_tat timestamp with time zone, p_now timestamp with time zone, p_interval double precision, p_burst integer) RETURNS double precision
    LANGUAGE sql STABLE
    AS $$
    SELECT p_burst - extract(epoch FROM skiplock.rate_schedule(p_tat, p_now, p_interval) - p_now)
                     ::double precision / p_interval
$$;

CREATE FUNCTION skiplock.rate_schedule(p_tat timestamp with time zone, p_now timestamp with time zone, p_interval double precision) RETURNS timestamp with time zone
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE WHEN p_tat >= p_now - make_interval(secs => least(p_interval / 4, 0.025))
                THEN p_tat ELSE p_now END
$$;

CREATE FUNCTION skiplock.record_alert(p_id text, p_attempt integer, p_delivered_to text[], p_error text, p_retry_delay double precision DEFAULT 0) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    UPDATE skiplock.alerts a
       SET delivered_to = ARRAY(SELECT DISTINCT s FROM unnest(a.delivered_to || p_delivered_to) s
                                 ORDER BY s),
           state = CASE WHEN p_error IS NULL THEN 'DELIVERED' ELSE a.state END,
           finished_at = CASE WHEN p_error IS NULL THEN v_now END,
           last_error = coalesce(p_error, a.last_error),
           available_at = CASE WHEN p_error IS NOT NULL AND a.attempts = p_attempt
                               THEN v_now + greatest(p_retry_delay, 0) * interval '1 second'
                               ELSE a.available_at END
     WHERE a.id = p_id AND a.state = 'PENDING';
    RETURN FOUND;
END;
$$;

CREATE FUNCTION skiplock.record_step(p_attempt_id text, p_position integer, p_name text, p_output jsonb, p_seconds double precision DEFAULT NULL::double precision) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run skiplock.runs := skiplock.current_run(p_attempt_id);
    v_now timestamptz := skiplock.now();
BEGIN
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, created_at, started_at)
    VALUES (v_run.id, p_position, 'step', p_name, p_output, v_now,
            CASE WHEN p_seconds IS NOT NULL
                 THEN v_now - make_interval(secs => greatest(p_seconds, 0)) END)
    ON CONFLICT (run_id, position) DO NOTHING;
    RETURN true;
END;
$$;

CREATE FUNCTION skiplock.record_steps(p_steps jsonb) RETURNS SETOF text
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_live text[];
BEGIN
    v_live := ARRAY(
        SELECT r.current_attempt_id
          FROM skiplock.runs r
         WHERE r.id IN (SELECT a.run_id FROM skiplock.attempts a
                         WHERE a.id IN (SELECT x->>'attempt_id'
                                          FROM jsonb_array_elements(p_steps) x))
           AND r.status = 'EXECUTING'
         ORDER BY r.id
           FOR NO KEY UPDATE);
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, created_at, started_at)
    SELECT a.run_id, s.position, 'step', s.name, s.output, v_now,
           CASE WHEN s.seconds IS NOT NULL
                THEN v_now - make_interval(secs => greatest(s.seconds, 0)) END
      FROM jsonb_to_recordset(p_steps)
           AS s (attempt_id text, position integer, name text, output jsonb,
                 seconds double precision)
      JOIN skiplock.attempts a ON a.id = s.attempt_id
     WHERE s.attempt_id = ANY (v_live)
    ON CONFLICT (run_id, position) DO NOTHING;
    RETURN QUERY SELECT DISTINCT x->>'attempt_id' FROM jsonb_array_elements(p_steps) x
                  WHERE NOT (x->>'attempt_id') = ANY (v_live);
END;
$$;

CREATE FUNCTION skiplock.register_worker(p_worker_id text, p_version text, p_hostname text, p_pid integer, p_queues text[], p_concurrency integer, p_tasks jsonb, p_lease_seconds double precision DEFAULT 30) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now   timestamptz := skiplock.now();
    v_dep   text := skiplock.gen_id('deployment');
    v_tasks text[] := ARRAY(SELECT t->>'id' FROM jsonb_array_elements(p_tasks) t);
BEGIN
    IF p_version IS NULL OR length(p_version) NOT BETWEEN 1 AND 128 THEN
        PERFORM skiplock.invalid('version must be 1 to 128 characters');
    END IF;
    IF p_lease_seconds IS NULL OR p_lease_seconds <= 0 THEN
        PERFORM skiplock.invalid('lease_seconds must be positive');
    END IF;
    INSERT INTO skiplock.workers (id, version, hostname, pid, queues, tasks, concurrency,
                                  started_at, last_heartbeat_at, lease_seconds, lease_expires_at)
    VALUES (p_worker_id, p_version, p_hostname, p_pid, p_queues, v_tasks, p_concurrency, v_now, v_now,
            p_lease_seconds, v_now + make_interval(secs => p_lease_seconds));

    INSERT INTO skiplock.deployments (id, version, worker_id, tasks, created_at)
    VALUES (v_dep, p_version, p_worker_id, v_tasks, v_now);

    -- a limit or retention declared in code is applied on deploy; queues declared without
    -- one keep theirs
    INSERT INTO skiplock.queues AS q (name, concurrency_limit, retention_s, created_at, updated_at)
    SELECT DISTINCT ON (t->>'queue') t->>'queue', (t->>'concurrency_limit')::integer,
           skiplock.seconds_or_forever(t, 'queue_retention'), v_now, v_now
      FROM jsonb_array_elements(p_tasks) t
     ORDER BY t->>'queue', (t->>'concurrency_limit')::integer NULLS LAST,
              skiplock.seconds_or_forever(t, 'queue_retention') NULLS LAST
    ON CONFLICT (name) DO UPDATE
        SET concurrency_limit = coalesce(excluded.concurrency_limit, q.concurrency_limit),
            retention_s = coalesce(excluded.retention_s, q.retention_s),
            updated_at = v_now;

    -- so is a rate limit declared in code ({"limit", "period", "burst"}; JSON null: none);
    -- a queue whose tasks declare nothing keeps the one set at run time
    PERFORM skiplock.set_queue_rate_limit(d.name, (d.rate->>'limit')::integer,
                                          (d.rate->>'period')::double precision,
                                          (d.rate->>'burst')::integer)
       FROM (SELECT DISTINCT ON (t->>'queue') t->>'queue' AS name, t->'rate_limit' AS rate
               FROM jsonb_array_elements(p_tasks) t
              WHERE t ? 'rate_limit'
              ORDER BY t->>'queue', jsonb_typeof(t->'rate_limit') = 'null') d  -- a limit first
       JOIN skiplock.queues q ON q.name = d.name
      WHERE (q.rate_limit, q.rate_period_s, q.rate_burst) IS DISTINCT FROM
            ((d.rate->>'limit')::integer, (d.rate->>'period')::double precision,
             (d.rate->>'burst')::integer);

    INSERT INTO skiplock.deployment_tasks AS d (
        task_identifier, version, queue, max_attempts, max_duration, ttl, deployed_at,
        task_retention_s, queue_retention_s, default_retention_s)
    SELECT t->>'id', p_version, t->>'queue', (t->>'max_attempts')::integer,
           (t->>'max_duration')::double precision, (t->>'ttl')::double precision, v_now,
           skiplock.seconds_or_forever(t, 'retention'), q.retention_s,
           skiplock.seconds_or_forever(t, 'default_retention')
      FROM jsonb_array_elements(p_tasks) t
      LEFT JOIN skiplock.queues q ON q.name = t->>'queue'
    ON CONFLICT (task_identifier, version) DO UPDATE
        SET queue = excluded.queue, max_attempts = excluded.max_attempts,
            max_duration = excluded.max_duration, ttl = excluded.ttl,
            task_retention_s = excluded.task_retention_s,
            queue_retention_s = excluded.queue_retention_s,
            default_retention_s = excluded.default_retention_s;

    PERFORM skiplock.sync_declared_schedules(p_version, p_tasks);
    PERFORM skiplock.release_pending_versions(v_tasks, NULL);
    PERFORM pg_notify('skiplock_workers', p_worker_id);  -- see peer_workers
    RETURN v_dep;
END;
$$;

CREATE FUNCTION skiplock.release_lost_attempts(p_worker_id text, p_held text[]) RETURNS integer
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_hashjoin TO 'off'
    SET enable_mergejoin TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_error    jsonb := jsonb_build_object(
        'type', 'AttemptLost',
        'message', format('worker %s lost track of this attempt (a reply or an outcome '
                          'that never reached it or the database)', p_worker_id));
    v_ids      text[];
    v_attempts text[];
    v_queued   boolean;
BEGIN
    WITH lost AS (
        SELECT r.id FROM skiplock.runs r
         WHERE r.worker_id = p_worker_id AND r.status = 'EXECUTING'
           AND r.current_attempt_id <> ALL (p_held)
           FOR UPDATE SKIP LOCKED),
    released AS (
        UPDATE skiplock.runs r
           SET status = CASE WHEN r.attempt_count < r.max_attempts
                             THEN 'QUEUED'::skiplock.run_status
                             ELSE 'CRASHED'::skiplock.run_status END,
               worker_id = NULL, updated_at = v_now, available_at = v_now,
               error = v_error,
               finished_at = CASE WHEN r.attempt_count < r.max_attempts THEN NULL ELSE v_now END
          FROM lost
         WHERE r.id = lost.id
        RETURNING r.id, r.current_attempt_id, r.status)
    SELECT array_agg(x.id), array_agg(x.current_attempt_id), bool_or(x.status = 'QUEUED')
      INTO v_ids, v_attempts, v_queued
      FROM released x;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    UPDATE skiplock.attempts a
       SET status = 'CRASHED', finished_at = v_now, error = v_error
     WHERE a.id = ANY (v_attempts) AND a.status = 'EXECUTING';
    PERFORM skiplock.notify_runs(v_ids);
    IF v_queued THEN
        PERFORM skiplock.wake('');
    END IF;
    RETURN cardinality(v_ids);
END;
$$;

CREATE FUNCTION skiplock.release_pending_versions(p_tasks text[], p_limit integer) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now   timestamptz := skiplock.now();
    v_count integer := 0;
    v_queue text;
    v_ids   text[] := '{}';
    v_id    text;
BEGIN
    FOR v_id, v_queue IN
        WITH due AS (
            SELECT r.id, dep.queue
              FROM skiplock.runs r
             CROSS JOIN LATERAL (
                   SELECT d.queue FROM skiplock.deployment_tasks d
                    WHERE d.task_identifier = r.task_identifier
                      AND (NOT r.version_pinned OR d.version = r.version)
                    ORDER BY d.deployed_at DESC, d.version DESC LIMIT 1) dep
             WHERE r.status = 'PENDING_VERSION'
               AND (p_tasks IS NULL OR r.task_identifier = ANY (p_tasks))
             ORDER BY r.order_at
             LIMIT p_limit
             FOR UPDATE OF r SKIP LOCKED),
        released AS (
            UPDATE skiplock.runs r
               SET status = CASE WHEN r.delayed_until > v_now THEN 'DELAYED'::skiplock.run_status
                                 ELSE 'QUEUED'::skiplock.run_status END,
                   queue = CASE WHEN r.queue = r.task_identifier THEN due.queue ELSE r.queue END,
                   updated_at = v_now
              FROM due
             WHERE r.id = due.id
            RETURNING r.id, r.status, r.queue)
        SELECT id, CASE WHEN status = 'QUEUED' THEN queue END FROM released
    LOOP
        v_count := v_count + 1;
        v_ids := v_ids || v_id;
        IF v_queue IS NOT NULL THEN
            PERFORM skiplock.wake(v_queue);  -- duplicates fold at commit
        END IF;
    END LOOP;
    PERFORM skiplock.notify_runs(v_ids);
    RETURN v_count;
END;
$$;

CREATE FUNCTION skiplock.release_worker_runs(p_worker_id text, p_error jsonb) RETURNS integer
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET jit TO 'off'
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_ids      text[];
    v_attempts text[];
    v_count    integer;
BEGIN
    WITH requeued AS (
        UPDATE skiplock.runs
           SET status = 'QUEUED', worker_id = NULL, updated_at = v_now
         WHERE worker_id = p_worker_id AND status = 'DEQUEUED'
        RETURNING id)
    SELECT array_agg(id) INTO v_ids FROM requeued;
    v_count := coalesce(cardinality(v_ids), 0);
    PERFORM skiplock.notify_runs(v_ids);
    IF v_count > 0 THEN
        PERFORM skiplock.wake('');
    END IF;
    WITH crashed AS (
        UPDATE skiplock.runs r
           SET status = 'CRASHED', finished_at = v_now, updated_at = v_now, worker_id = NULL,
               error = p_error
         WHERE r.worker_id = p_worker_id AND r.status = 'EXECUTING'
        RETURNING r.id, r.current_attempt_id)
    SELECT array_agg(c.current_attempt_id), array_agg(c.id) INTO v_attempts, v_ids
      FROM crashed c;
    PERFORM skiplock.notify_runs(v_ids);
    UPDATE skiplock.attempts a
       SET status = 'CRASHED', finished_at = v_now, error = p_error
     WHERE a.id = ANY (v_attempts) AND a.status = 'EXECUTING';
    RETURN v_count + coalesce(cardinality(v_attempts), 0);
END;
$$;

CREATE FUNCTION skiplock.replay_run(p_run_id text) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT * INTO v_run FROM skiplock.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001', MESSAGE = format('run %s does not exist', p_run_id);
    END IF;
    RETURN (SELECT t.run_id FROM skiplock.trigger(v_run.task_identifier, v_run.payload,
        jsonb_strip_nulls(jsonb_build_object(
            'tags', to_jsonb(v_run.tags), 'metadata', v_run.metadata, 'queue', v_run.queue,
            'concurrency_key', v_run.concurrency_key, 'priority', v_run.priority,
            'max_attempts', v_run.max_attempts, 'max_duration', v_run.max_duration,
            'ttl', v_run.ttl, 'rate_limit_key', v_run.rate_limit_key,
            'rate_cost', v_run.rate_cost))) t);
END;
$$;

CREATE FUNCTION skiplock.reschedule_run(p_run_id text, p_delay_until timestamp with time zone) RETURNS timestamp with time zone
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run skiplock.runs := skiplock.run_for_update(p_run_id);
BEGIN
    IF v_run.status <> 'DELAYED' THEN
        RAISE EXCEPTION USING ERRCODE = 'SL002',
            MESSAGE = format('run %s is %s, only DELAYED runs can be rescheduled', p_run_id, v_run.status);
    END IF;
    UPDATE skiplock.runs
       SET delayed_until = p_delay_until, available_at = p_delay_until,
           order_at = p_delay_until - make_interval(secs => priority),
           expires_at = p_delay_until + make_interval(secs => ttl), updated_at = skiplock.now()
     WHERE id = p_run_id;
    PERFORM skiplock.notify_runs(ARRAY[p_run_id]);
    RETURN p_delay_until;
END;
$$;

CREATE FUNCTION skiplock.resume_if_ready(p_run_id text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT * INTO v_run FROM skiplock.runs WHERE id = p_run_id FOR NO KEY UPDATE;
    IF NOT FOUND OR v_run.status <> 'WAITING' THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM skiplock.run_waitpoints e WHERE e.run_id = p_run_id AND e.pending) THEN
        RETURN false;
    END IF;
    UPDATE skiplock.runs SET status = 'QUEUED', available_at = skiplock.now(),
                             updated_at = skiplock.now()
     WHERE id = p_run_id;
    PERFORM skiplock.notify_runs(ARRAY[p_run_id]);
    PERFORM skiplock.wake(v_run.queue);
    RETURN true;
END;
$$;

CREATE FUNCTION skiplock.resume_queue(p_name text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    PERFORM skiplock.queue_for_update(p_name);
    UPDATE skiplock.queues SET paused = false, updated_at = skiplock.now() WHERE name = p_name;
    PERFORM skiplock.wake(p_name);
    RETURN false;
END;
$$;

CREATE FUNCTION skiplock.run_for_update(p_run_id text) RETURNS skiplock.runs
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.run_log(p_run_id text) RETURNS TABLE(step integer, kind text, name text, output jsonb, waitpoint_id text, waitpoint_status skiplock.waitpoint_status, waitpoint_output jsonb, waitpoint_is_error boolean, batch_results jsonb)
    LANGUAGE sql STABLE
    AS $$
    SELECT s.position, s.kind, s.name, s.output, s.waitpoint_id, w.status, w.output, w.is_error,
           w.results
      FROM skiplock.run_steps s LEFT JOIN skiplock.waitpoints w ON w.id = s.waitpoint_id
     WHERE s.run_id = p_run_id
     ORDER BY s.position
$$;

CREATE FUNCTION skiplock.run_logs_of(p_run_id text, p_after bigint DEFAULT NULL::bigint, p_limit integer DEFAULT 1000) RETURNS TABLE(run_id text, attempt integer, seq bigint, at timestamp with time zone, level text, logger text, message text, exception text, dropped integer)
    LANGUAGE plpgsql STABLE
    AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        PERFORM skiplock.invalid(format('limit must be 1 to 10000, got %s', p_limit));
    END IF;
    RETURN QUERY
        SELECT l.run_id, l.attempt, l.seq, l.at, l.level, l.logger, l.message, l.exception,
               l.dropped
          FROM skiplock.run_logs l
         WHERE l.run_id = p_run_id AND l.seq > coalesce(p_after, -1)
         ORDER BY l.seq
         LIMIT p_limit;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = p_run_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001', MESSAGE = format('run %s does not exist', p_run_id);
    END IF;
END;
$$;

CREATE TABLE skiplock.deployment_tasks (
    task_identifier text NOT NULL COLLATE pg_catalog."C",
    version text NOT NULL COLLATE pg_catalog."C",
    queue text NOT NULL COLLATE pg_catalog."C",
    max_attempts integer NOT NULL,
    max_duration double precision,
    ttl double precision,
    deployed_at timestamp with time zone NOT NULL,
    task_retention_s double precision,
    queue_retention_s double precision,
    default_retention_s double precision,
    CONSTRAINT deployment_tasks_default_retention_s_check CHECK ((default_retention_s > (0)::double precision)),
    CONSTRAINT deployment_tasks_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT deployment_tasks_max_duration_check CHECK ((max_duration > (0)::double precision)),
    CONSTRAINT deployment_tasks_queue_retention_s_check CHECK ((queue_retention_s > (0)::double precision)),
    CONSTRAINT deployment_tasks_task_retention_s_check CHECK ((task_retention_s > (0)::double precision)),
    CONSTRAINT deployment_tasks_ttl_check CHECK ((ttl > (0)::double precision))
);

CREATE FUNCTION skiplock.run_options(p_opts jsonb, p_task text, p_dep skiplock.deployment_tasks, p_now timestamp with time zone) RETURNS skiplock.run_values
    LANGUAGE plpgsql STABLE
    AS $$
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

CREATE FUNCTION skiplock.run_result(p_run skiplock.runs) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
    SELECT jsonb_build_object('run_id', p_run.id, 'status', p_run.status,
                              'output', p_run.output, 'error', p_run.error)
$$;

CREATE FUNCTION skiplock.run_retention(p_opts jsonb, p_dep skiplock.deployment_tasks, p_queue text) RETURNS double precision
    LANGUAGE plpgsql STABLE
    AS $$
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

CREATE FUNCTION skiplock.run_status_reason(p_run_id text) RETURNS text
    LANGUAGE plpgsql STABLE
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_run skiplock.runs;
    v_queue skiplock.queues;
    v_worker skiplock.workers;
    v_count bigint;
    v_key text;
    v_interval double precision;
    v_budget double precision;
    v_need integer;
    v_tat timestamptz;
BEGIN
    SELECT * INTO v_run FROM skiplock.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001', MESSAGE = format('run %s does not exist', p_run_id);
    END IF;
    CASE v_run.status
    WHEN 'PENDING_VERSION' THEN
        IF v_run.version_pinned AND EXISTS (
            SELECT 1 FROM skiplock.deployment_tasks d WHERE d.task_identifier = v_run.task_identifier
        ) THEN
            RETURN format('no deployment has task %s at version %s', v_run.task_identifier,
                          v_run.version);
        END IF;
        RETURN format('no deployment has task %s: start a worker that defines it',
                      v_run.task_identifier);
    WHEN 'DELAYED' THEN
        RETURN format('delayed until %s', skiplock.utc_text(v_run.delayed_until));
    WHEN 'QUEUED' THEN
        IF v_run.available_at > v_now THEN
            RETURN format('attempt %s at %s', v_run.attempt_count + 1,
                          skiplock.utc_text(v_run.available_at));
        END IF;
        SELECT * INTO v_queue FROM skiplock.queues WHERE name = v_run.queue;
        IF v_queue.paused THEN
            RETURN format('queue %s is paused', v_run.queue);
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM skiplock.workers w
             WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND w.lease_expires_at > v_now
               AND v_run.task_identifier = ANY (w.tasks)
               AND (v_run.version IS NULL OR w.version = v_run.version)
               AND (w.queues IS NULL OR v_run.queue = ANY (w.queues))
        ) THEN
            RETURN CASE WHEN v_run.version IS NULL
                        THEN format('waiting for a worker with task %s', v_run.task_identifier)
                        ELSE format('waiting for a worker of version %s', v_run.version) END;
        END IF;
        IF v_queue.concurrency_limit IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM skiplock.runs r
             WHERE r.queue = v_run.queue AND r.status IN ('DEQUEUED', 'EXECUTING');
            IF v_count >= v_queue.concurrency_limit THEN
                RETURN format('queue %s is at its concurrency limit (%s running)', v_run.queue,
                              v_count);
            END IF;
        END IF;
        IF v_queue.rate_limit IS NOT NULL THEN
            v_key := coalesce(v_run.rate_limit_key, v_run.concurrency_key, '');
            v_interval := v_queue.rate_period_s / v_queue.rate_limit;
            SELECT skiplock.rate_budget(b.tat, v_now, v_interval, v_queue.rate_burst), b.tat
              INTO v_budget, v_tat
              FROM skiplock.rate_buckets b WHERE b.queue = v_run.queue AND b.key = v_key;
            v_need := least(coalesce(v_run.rate_cost, 1), v_queue.rate_burst);
            IF v_budget < v_need - 1e-9 THEN
                RETURN format('queue %s is rate limited (%s per %s s%s): its next run%s may '
                              'start at %s', v_run.queue, v_queue.rate_limit,
                              v_queue.rate_period_s,
                              CASE WHEN v_key <> '' THEN format(', key %s', v_key) ELSE '' END,
                              CASE WHEN v_need > 1 THEN format(' of cost %s', v_need) ELSE '' END,
                              skiplock.utc_text(v_tat - make_interval(
                                  secs => (v_queue.rate_burst - v_need) * v_interval)));
            END IF;
        END IF;
        RETURN NULL;
    WHEN 'DEQUEUED', 'EXECUTING' THEN
        SELECT * INTO v_worker FROM skiplock.workers WHERE id = v_run.worker_id;
        IF FOUND AND v_worker.lost_at IS NULL AND v_worker.lease_expires_at < v_now THEN
            RETURN format('worker %s lapsed at %s (no heartbeat); maintenance (skiplock.tick) '
                          'will mark the run %s', v_worker.id,
                          skiplock.utc_text(v_worker.lease_expires_at),
                          CASE WHEN v_run.status = 'DEQUEUED' THEN 'QUEUED again'
                               ELSE 'CRASHED' END);
        END IF;
        RETURN NULL;
    WHEN 'WAITING' THEN
        SELECT count(*) INTO v_count FROM skiplock.run_waitpoints e
         WHERE e.run_id = p_run_id AND e.pending;
        RETURN format('waiting on %s pending waitpoint%s', v_count,
                      CASE WHEN v_count = 1 THEN '' ELSE 's' END);
    ELSE
        RETURN NULL;
    END CASE;
END;
$$;

CREATE FUNCTION skiplock.run_trace(p_run_id text, p_limit integer) RETURNS TABLE(call_position integer, kind text, name text, started_at timestamp with time zone, ended_at timestamp with time zone, waitpoint_id text, waitpoint_type skiplock.waitpoint_type, waitpoint_status skiplock.waitpoint_status, is_error boolean, completes_at timestamp with time zone, timeout_at timestamp with time zone, target_run_id text, target_batch_id text)
    LANGUAGE sql STABLE
    AS $$
    SELECT s.position, s.kind, s.name, coalesce(s.started_at, s.created_at),
           CASE WHEN s.waitpoint_id IS NULL THEN s.created_at ELSE w.completed_at END,
           s.waitpoint_id, w.type, w.status, w.is_error, w.completes_at, w.timeout_at,
           w.run_id, w.batch_id
      FROM skiplock.run_steps s LEFT JOIN skiplock.waitpoints w ON w.id = s.waitpoint_id
     WHERE s.run_id = p_run_id
     ORDER BY s.position
     LIMIT p_limit
$$;

CREATE FUNCTION skiplock.run_trace_logs(p_run_id text, p_limit integer) RETURNS TABLE(attempt integer, seq bigint, at timestamp with time zone, level text, logger text, message text)
    LANGUAGE plpgsql STABLE
    AS $_$
BEGIN
    IF to_regclass('skiplock.run_logs') IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY EXECUTE
        'SELECT l.attempt::integer, l.seq::bigint, l.at, l.level::text, l.logger::text,
                l.message::text
           FROM (SELECT * FROM skiplock.run_logs r WHERE r.run_id = $1
                  ORDER BY r.seq DESC LIMIT $2) l
          ORDER BY l.seq'
        USING p_run_id, p_limit;
END;
$_$;

CREATE FUNCTION skiplock.run_waitpoint(p_run_id text) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_id  text;
    v_run skiplock.runs;
BEGIN
    SELECT w.id INTO v_id FROM skiplock.waitpoints w WHERE w.type = 'RUN' AND w.run_id = p_run_id;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    UPDATE skiplock.runs SET waited_on = true WHERE id = p_run_id RETURNING * INTO v_run;
    INSERT INTO skiplock.waitpoints (id, type, status, run_id, output, is_error, created_at,
                                     completed_at)
    VALUES (skiplock.gen_id('waitpoint'), 'RUN',
            CASE WHEN skiplock.is_final(v_run.status) THEN 'COMPLETED'
                 ELSE 'PENDING' END::skiplock.waitpoint_status,
            p_run_id, CASE WHEN skiplock.is_final(v_run.status) THEN skiplock.run_result(v_run) END,
            v_run.status <> 'COMPLETED', skiplock.now(),
            CASE WHEN skiplock.is_final(v_run.status) THEN skiplock.now() END)
    ON CONFLICT (run_id) WHERE type = 'RUN' DO NOTHING
    RETURNING id INTO v_id;
    RETURN coalesce(v_id, (SELECT w.id FROM skiplock.waitpoints w
                            WHERE w.type = 'RUN' AND w.run_id = p_run_id));
END;
$$;

CREATE FUNCTION skiplock.schedule_for_update(p_id text) RETURNS skiplock.schedules
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.schedule_not_found(p_id text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'SL009', MESSAGE = format('schedule %s does not exist', p_id);
END;
$$;

CREATE FUNCTION skiplock.scheduled_payload(p_s skiplock.schedules, p_slot timestamp with time zone) RETURNS jsonb
    LANGUAGE sql STABLE
    AS $$
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

CREATE FUNCTION skiplock.seconds_or_forever(p_obj jsonb, p_key text) RETURNS double precision
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT CASE WHEN p_obj ? p_key
                THEN coalesce((p_obj->>p_key)::double precision, 'Infinity') END
$$;

CREATE FUNCTION skiplock.set_queue_limit(p_name text, p_limit integer) RETURNS integer
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF p_limit < 1 THEN
        PERFORM skiplock.invalid(format('a concurrency limit must be at least 1, got %s', p_limit));
    END IF;
    PERFORM skiplock.queue_for_update(p_name);
    UPDATE skiplock.queues SET concurrency_limit = p_limit, updated_at = skiplock.now()
     WHERE name = p_name;
    PERFORM skiplock.wake(p_name);
    RETURN p_limit;
END;
$$;

CREATE FUNCTION skiplock.set_queue_rate_limit(p_name text, p_limit integer, p_period_s double precision, p_burst integer DEFAULT 1) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now   timestamptz := skiplock.clock();
    v_queue skiplock.queues;
BEGIN
    IF p_limit IS NOT NULL THEN
        IF p_limit < 1 THEN
            PERFORM skiplock.invalid(format('a rate limit must be at least 1, got %s', p_limit));
        END IF;
        IF p_period_s IS NULL OR NOT p_period_s > 0 OR p_period_s = 'Infinity' THEN
            PERFORM skiplock.invalid(format(
                'a rate period must be a positive number of seconds, got %s',
                coalesce(p_period_s::text, 'NULL')));
        END IF;
        IF p_burst IS NULL OR p_burst < 1 THEN
            PERFORM skiplock.invalid(format('a burst must be at least 1, got %s',
                                            coalesce(p_burst::text, 'NULL')));
        END IF;
    END IF;
    v_queue := skiplock.queue_for_update(p_name);
    IF p_limit IS NULL THEN
        DELETE FROM skiplock.rate_buckets b WHERE b.queue = p_name;
    ELSIF v_queue.rate_limit IS NOT NULL THEN
        UPDATE skiplock.rate_buckets b
           SET tat = v_now + (b.tat - v_now) * ((p_period_s / p_limit)
                                                / (v_queue.rate_period_s / v_queue.rate_limit))
         WHERE b.queue = p_name AND b.tat > v_now;
    END IF;
    UPDATE skiplock.queues
       SET rate_limit = p_limit,
           rate_period_s = CASE WHEN p_limit IS NOT NULL THEN p_period_s END,
           rate_burst = CASE WHEN p_limit IS NOT NULL THEN p_burst END,
           updated_at = skiplock.now()
     WHERE name = p_name;
    PERFORM skiplock.wake(p_name);
    RETURN p_limit;
END;
$$;

CREATE FUNCTION skiplock.set_schedule_active(p_id text, p_active boolean) RETURNS skiplock.schedules
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.set_worker_polls(p_worker_id text) RETURNS void
    LANGUAGE sql
    AS $$
    UPDATE skiplock.workers SET polls = true WHERE id = p_worker_id
$$;

CREATE FUNCTION skiplock.start_attempts(p_worker_id text, p_run_ids text[]) RETURNS TABLE(run_id text, attempt_id text, attempt_number integer)
    LANGUAGE sql
    AS $$
    SELECT b.run_id, b.attempt_id, b.attempt_number
      FROM skiplock.begin_attempts(p_worker_id, NULL, p_run_ids, 'DEQUEUED') b
$$;

CREATE FUNCTION skiplock.still_awaited(p_run_id text, p_batch_id text) RETURNS boolean
    LANGUAGE sql STABLE
    AS $$
    SELECT EXISTS (
        SELECT 1 FROM skiplock.waitpoints w
          JOIN skiplock.run_waitpoints e ON e.waitpoint_id = w.id
          JOIN skiplock.runs waiting ON waiting.id = e.run_id
         WHERE ((w.type = 'RUN' AND w.run_id = p_run_id)
                OR (w.type = 'BATCH' AND w.batch_id = p_batch_id))
           AND NOT skiplock.is_final(waiting.status))
$$;

CREATE FUNCTION skiplock.stop_worker(p_worker_id text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    UPDATE skiplock.workers SET stopped_at = v_now, last_heartbeat_at = v_now WHERE id = p_worker_id;
    PERFORM pg_notify('skiplock_workers', p_worker_id);  -- see peer_workers
    RETURN skiplock.release_worker_runs(p_worker_id, jsonb_build_object(
        'type', 'WorkerStopped',
        'message', format('worker %s stopped without recording this attempt', p_worker_id)));
END;
$$;

CREATE FUNCTION skiplock.subscribe() RETURNS void
    LANGUAGE sql
    AS $$
    INSERT INTO skiplock.subscribers (pid) VALUES (pg_backend_pid())
    ON CONFLICT (pid) DO UPDATE SET since = now()
$$;

CREATE FUNCTION skiplock.subscription_horizon() RETURNS xid8
    LANGUAGE sql
    AS $$ SELECT pg_snapshot_xmax(pg_current_snapshot()) $$;

CREATE FUNCTION skiplock.sync_declared_schedules(p_version text, p_tasks jsonb) RETURNS void
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.task_deployment(p_task text, p_version text) RETURNS SETOF skiplock.deployment_tasks
    LANGUAGE sql STABLE
    AS $$
    SELECT * FROM skiplock.deployment_tasks d
     WHERE d.task_identifier = p_task AND (p_version IS NULL OR d.version = p_version)
     ORDER BY d.deployed_at DESC, d.version DESC LIMIT 1
$$;

CREATE FUNCTION skiplock.tick(p_batch integer DEFAULT 1000) RETURNS jsonb
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_ids      text[];
    v_expired  integer;
    v_due      record;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('skiplock.tick')) THEN
        -- another caller ticks: still do (and say) what must happen on time
        SELECT * INTO v_due FROM skiplock.wake_due(p_batch);
        RETURN jsonb_build_object('skipped', true, 'waitpoints', v_due.waitpoints,
                                  'promoted', v_due.promoted, 'next_in', v_due.next_in);
    END IF;

    -- first expiry, so that a run both due and expired never starts
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.expires_at <= v_now AND r.status IN ('PENDING_VERSION', 'DELAYED', 'QUEUED')
         ORDER BY r.expires_at
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED);
    UPDATE skiplock.runs r
       SET status = 'EXPIRED', expired_at = v_now, finished_at = v_now, updated_at = v_now
     WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_expired = ROW_COUNT;
    PERFORM skiplock.notify_runs(v_ids);

    SELECT * INTO v_due FROM skiplock.wake_due(p_batch);

    -- registrations of sessions that are gone (killed, restarted server)
    DELETE FROM skiplock.subscribers s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid);
    DELETE FROM skiplock.subscriptions s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid);

    RETURN jsonb_build_object(
        'waitpoints', v_due.waitpoints,
        'expired', v_expired,
        'promoted', v_due.promoted,
        'next_in', v_due.next_in,
        'released', skiplock.release_pending_versions(NULL, p_batch),
        'crashed', skiplock.crash_lost_workers(p_batch),
        'pruned', CASE WHEN skiplock.due('prune_registry', interval '10 minutes')
                       THEN skiplock.prune_registry() END,
        'scheduled', skiplock.fire_schedules(p_batch),
        'purged', skiplock.purge(500),
        'purged_tokens', CASE WHEN skiplock.due('purge_tokens', interval '10 minutes')
                              THEN skiplock.purge_tokens(skiplock.token_retention()) END);
END;
$$;

CREATE FUNCTION skiplock.token_retention() RETURNS interval
    LANGUAGE sql STABLE
    AS $$
    SELECT CASE WHEN max(d.default_retention_s) = 'Infinity' THEN NULL
                ELSE coalesce(max(d.default_retention_s), 2592000) * interval '1 second' END
      FROM skiplock.deployment_tasks d
$$;

CREATE FUNCTION skiplock.trigger(p_task text, p_payload jsonb, p_options jsonb DEFAULT '{}'::jsonb) RETURNS TABLE(run_id text, run_status skiplock.run_status, is_cached boolean)
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.trigger_and_wait(p_attempt_id text, p_position integer, p_task text, p_payload jsonb, p_options jsonb) RETURNS TABLE(child_id text, outcome text)
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_parent text := (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id);
    v_child  text;
    v_wp     text;
BEGIN
    SELECT t.run_id INTO v_child FROM skiplock.trigger(p_task, p_payload,
        jsonb_build_object('parent_id', v_parent,
                           'version', (SELECT r.version FROM skiplock.runs r WHERE r.id = v_parent))
        || coalesce(p_options, '{}')) t;
    v_wp := skiplock.run_waitpoint(v_child);
    RETURN QUERY SELECT v_child, skiplock.block_run(p_attempt_id, p_position, 'run', p_task,
                                                    ARRAY[v_wp], to_jsonb(v_child));
END;
$$;

CREATE FUNCTION skiplock.trigger_batch(p_task text, p_items jsonb, p_options jsonb DEFAULT '{}'::jsonb) RETURNS TABLE(batch_id text, run_id text, run_status skiplock.run_status, is_cached boolean)
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.unknown_keys_problem(p_obj jsonb, p_known text[], p_what text) RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
    SELECT format('unknown %s(s): %s; valid: %s', p_what, string_agg(k, ', ' ORDER BY k),
                  array_to_string(p_known, ', '))
      FROM jsonb_object_keys(p_obj - p_known) k
    HAVING count(*) > 0
$$;

CREATE FUNCTION skiplock.unsubscribe() RETURNS void
    LANGUAGE sql
    AS $$
    DELETE FROM skiplock.subscriptions WHERE pid = pg_backend_pid();
    DELETE FROM skiplock.subscribers WHERE pid = pg_backend_pid();
$$;

CREATE FUNCTION skiplock.unwatch(p_kinds text[], p_keys text[]) RETURNS void
    LANGUAGE sql
    AS $$
    DELETE FROM skiplock.subscriptions s
     USING unnest(p_kinds, p_keys) AS u(k, v)
     WHERE s.kind = u.k AND s.key = u.v AND s.pid = pg_backend_pid()
$$;

CREATE FUNCTION skiplock.update_metadata(p_attempt_id text, p_metadata jsonb) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    IF octet_length(p_metadata::text) > 262144 THEN
        PERFORM skiplock.invalid('metadata must be at most 256 KB');
    END IF;
    v_run := skiplock.current_run(p_attempt_id);
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    UPDATE skiplock.runs SET metadata = p_metadata, updated_at = skiplock.now() WHERE id = v_run.id;
    PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
    RETURN true;
END;
$$;

CREATE FUNCTION skiplock.update_schedule(p_id text, p_changes jsonb) RETURNS skiplock.schedules
    LANGUAGE plpgsql
    AS $$
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

CREATE FUNCTION skiplock.utc_text(p_at timestamp with time zone) RETURNS text
    LANGUAGE sql STABLE
    AS $$ SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC' $$;

CREATE FUNCTION skiplock.wait_until(p_attempt_id text, p_position integer, p_name text, p_until timestamp with time zone) RETURNS text
    LANGUAGE plpgsql
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_id  text := skiplock.gen_id('waitpoint');
BEGIN
    INSERT INTO skiplock.waitpoints (id, type, status, completes_at, created_at, completed_at)
    VALUES (v_id, 'DATETIME', CASE WHEN p_until <= v_now THEN 'COMPLETED'
                                   ELSE 'PENDING' END::skiplock.waitpoint_status,
            p_until, v_now, CASE WHEN p_until <= v_now THEN v_now END);
    RETURN skiplock.block_run(p_attempt_id, p_position, 'wait', p_name, ARRAY[v_id]);
END;
$$;

CREATE FUNCTION skiplock.wake(p_queue text) RETURNS void
    LANGUAGE plpgsql
    AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM skiplock.workers w
                WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND NOT w.polls
                  AND w.lease_expires_at > skiplock.now()) THEN
        PERFORM pg_notify('skiplock_wake', p_queue);
    END IF;
END;
$$;

CREATE FUNCTION skiplock.wake_due(p_batch integer DEFAULT 1000, OUT waitpoints integer, OUT promoted integer, OUT next_in double precision) RETURNS record
    LANGUAGE plpgsql
    SET jit TO 'off'
    AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_ids text[];
    v_wp  text;
    v_n   integer := 0;
BEGIN
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.status = 'DELAYED' AND r.delayed_until <= v_now
           AND (r.expires_at IS NULL OR r.expires_at > v_now)
         ORDER BY r.delayed_until
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED);
    UPDATE skiplock.runs r SET status = 'QUEUED', updated_at = v_now WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS promoted = ROW_COUNT;
    IF promoted > 0 THEN
        PERFORM skiplock.notify_runs(v_ids);
        PERFORM skiplock.wake('');
    END IF;

    waitpoints := 0;
    FOR v_wp IN
        SELECT w.id FROM skiplock.waitpoints w
         WHERE w.status = 'PENDING' AND w.type = 'DATETIME' AND w.completes_at <= v_now
         ORDER BY w.completes_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        v_n := v_n + 1;
        waitpoints := waitpoints + skiplock.complete_waitpoint(v_wp, 'null', false)::integer;
    END LOOP;
    FOR v_wp IN
        SELECT w.id FROM skiplock.waitpoints w
         WHERE w.status = 'PENDING' AND w.type = 'TOKEN' AND w.timeout_at <= v_now
         ORDER BY w.timeout_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        v_n := v_n + 1;
        waitpoints := waitpoints + skiplock.complete_waitpoint(
            v_wp, jsonb_build_object('type', 'WaitpointTimeout',
                                     'message', format('token %s timed out', v_wp)), true)::integer;
    END LOOP;

    IF promoted >= p_batch OR v_n >= p_batch THEN
        next_in := 0;  -- more are due: call again at once
        RETURN;
    END IF;
    -- the earliest of what is still pending, each the first entry of its partial index
    -- (rows due already but locked by another caller count as due in 10 ms)
    next_in := extract(epoch FROM least(
        (SELECT min(r.delayed_until) FROM skiplock.runs r WHERE r.status = 'DELAYED'),
        (SELECT min(w.completes_at) FROM skiplock.waitpoints w
          WHERE w.status = 'PENDING' AND w.type = 'DATETIME'),
        (SELECT min(w.timeout_at) FROM skiplock.waitpoints w
          WHERE w.status = 'PENDING' AND w.type = 'TOKEN' AND w.timeout_at IS NOT NULL))
        - skiplock.clock());
    IF next_in IS NOT NULL THEN  -- (greatest would turn NULL into 0.01)
        next_in := greatest(next_in, 0.01);
    END IF;
END;
$$;

CREATE FUNCTION skiplock.watch(p_kinds text[], p_keys text[]) RETURNS void
    LANGUAGE sql
    AS $$
    INSERT INTO skiplock.subscriptions (kind, key, pid)
    SELECT k, v, pg_backend_pid() FROM unnest(p_kinds, p_keys) AS u(k, v)
    ON CONFLICT DO NOTHING
$$;

CREATE FUNCTION skiplock.worker_is_active(p_worker_id text) RETURNS boolean
    LANGUAGE plpgsql
    AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM skiplock.workers w
                    WHERE w.id = p_worker_id AND w.lost_at IS NULL AND w.stopped_at IS NULL
                      FOR SHARE);
END;
$$;

CREATE TABLE skiplock.alerts (
    id text NOT NULL COLLATE pg_catalog."C",
    run_id text NOT NULL COLLATE pg_catalog."C",
    task_identifier text NOT NULL COLLATE pg_catalog."C",
    status skiplock.run_status NOT NULL,
    created_at timestamp with time zone NOT NULL,
    state text DEFAULT 'PENDING'::text NOT NULL COLLATE pg_catalog."C",
    available_at timestamp with time zone NOT NULL,
    attempts integer DEFAULT 0 NOT NULL,
    claimed_by text COLLATE pg_catalog."C",
    delivered_to text[] DEFAULT '{}'::text[] NOT NULL,
    last_error text,
    finished_at timestamp with time zone,
    CONSTRAINT alerts_state_check CHECK ((state = ANY (ARRAY['PENDING'::text, 'DELIVERED'::text, 'ABANDONED'::text])))
);

CREATE TABLE skiplock.batches (
    id text NOT NULL COLLATE pg_catalog."C",
    task_identifier text NOT NULL COLLATE pg_catalog."C",
    run_count integer NOT NULL,
    created_at timestamp with time zone NOT NULL,
    run_ids text[] DEFAULT '{}'::text[] NOT NULL COLLATE pg_catalog."C"
);

CREATE TABLE skiplock.debounces (
    task_identifier text NOT NULL COLLATE pg_catalog."C",
    key text NOT NULL COLLATE pg_catalog."C",
    run_id text NOT NULL COLLATE pg_catalog."C",
    mode text NOT NULL COLLATE pg_catalog."C",
    first_at timestamp with time zone NOT NULL,
    until_at timestamp with time zone NOT NULL,
    deadline timestamp with time zone,
    triggers integer DEFAULT 1 NOT NULL,
    CONSTRAINT debounces_key_check CHECK (((length(key) >= 1) AND (length(key) <= 256))),
    CONSTRAINT debounces_mode_check CHECK ((mode = ANY (ARRAY['trailing'::text, 'leading'::text])))
);

CREATE TABLE skiplock.deployments (
    id text NOT NULL COLLATE pg_catalog."C",
    version text NOT NULL COLLATE pg_catalog."C",
    worker_id text COLLATE pg_catalog."C",
    tasks text[] NOT NULL COLLATE pg_catalog."C",
    created_at timestamp with time zone DEFAULT now() NOT NULL
);

CREATE SEQUENCE skiplock.id_seq
    START WITH 0
    INCREMENT BY 1
    MINVALUE 0
    MAXVALUE 65535
    CACHE 1
    CYCLE;

CREATE TABLE skiplock.maintenance (
    chore text NOT NULL,
    last_run_at timestamp with time zone NOT NULL,
    mark timestamp with time zone
);

CREATE TABLE skiplock.workers (
    id text NOT NULL COLLATE pg_catalog."C",
    version text NOT NULL COLLATE pg_catalog."C",
    hostname text NOT NULL,
    pid integer NOT NULL,
    queues text[] COLLATE pg_catalog."C",
    tasks text[] NOT NULL COLLATE pg_catalog."C",
    concurrency integer NOT NULL,
    started_at timestamp with time zone NOT NULL,
    last_heartbeat_at timestamp with time zone NOT NULL,
    stopped_at timestamp with time zone,
    lease_seconds double precision DEFAULT 30 NOT NULL,
    lease_expires_at timestamp with time zone,
    lost_at timestamp with time zone,
    polls boolean DEFAULT false NOT NULL,
    CONSTRAINT workers_lease_seconds_check CHECK ((lease_seconds > (0)::double precision))
);

CREATE VIEW skiplock.metrics AS
 WITH queued AS MATERIALIZED (
         SELECT r.queue,
            count(*) AS n,
            min(r.order_at) AS first_at
           FROM skiplock.runs r
          WHERE (r.status = 'QUEUED'::skiplock.run_status)
          GROUP BY r.queue
        ), running AS MATERIALIZED (
         SELECT r.queue,
            count(*) AS n
           FROM skiplock.runs r
          WHERE (r.status = ANY (ARRAY['DEQUEUED'::skiplock.run_status, 'EXECUTING'::skiplock.run_status]))
          GROUP BY r.queue
        ), parked AS MATERIALIZED (
         SELECT ( SELECT count(*) AS count
                   FROM skiplock.runs r
                  WHERE (r.status = ANY (ARRAY['PENDING_VERSION'::skiplock.run_status, 'DELAYED'::skiplock.run_status, 'WAITING'::skiplock.run_status]))) AS parked,
            ( SELECT count(*) AS count
                   FROM skiplock.runs r
                  WHERE (r.status = 'DELAYED'::skiplock.run_status)) AS delayed,
            ( SELECT count(*) AS count
                   FROM skiplock.runs r
                  WHERE (r.status = 'PENDING_VERSION'::skiplock.run_status)) AS pending_version
        ), queues AS MATERIALIZED (
         SELECT q.name
           FROM skiplock.queues q
        UNION
         SELECT queued.queue
           FROM queued
        UNION
         SELECT running.queue
           FROM running
        ), workers AS MATERIALIZED (
         SELECT
                CASE
                    WHEN (w.stopped_at IS NOT NULL) THEN 'stopped'::text
                    WHEN (w.lost_at IS NOT NULL) THEN 'lost'::text
                    WHEN (w.lease_expires_at < skiplock.now()) THEN 'lapsed'::text
                    ELSE 'active'::text
                END AS state,
            count(*) AS n
           FROM skiplock.workers w
          GROUP BY
                CASE
                    WHEN (w.stopped_at IS NOT NULL) THEN 'stopped'::text
                    WHEN (w.lost_at IS NOT NULL) THEN 'lost'::text
                    WHEN (w.lease_expires_at < skiplock.now()) THEN 'lapsed'::text
                    ELSE 'active'::text
                END
        )
 SELECT 'queue_depth'::text AS metric,
    q.name AS label,
    (COALESCE(d.n, (0)::bigint))::double precision AS value
   FROM (queues q
     LEFT JOIN queued d ON ((d.queue = q.name)))
UNION ALL
 SELECT 'queue_oldest_age_seconds'::text AS metric,
    q.name AS label,
    (COALESCE(GREATEST(EXTRACT(epoch FROM (skiplock.now() - d.first_at)), (0)::numeric), (0)::numeric))::double precision AS value
   FROM (queues q
     LEFT JOIN queued d ON ((d.queue = q.name)))
UNION ALL
 SELECT 'queue_running'::text AS metric,
    q.name AS label,
    (COALESCE(s.n, (0)::bigint))::double precision AS value
   FROM (queues q
     LEFT JOIN running s ON ((s.queue = q.name)))
UNION ALL
 SELECT f.metric,
    NULL::text AS label,
    (f.value)::double precision AS value
   FROM (parked p
     CROSS JOIN LATERAL ( VALUES ('runs_waiting'::text,((p.parked - p.delayed) - p.pending_version)), ('runs_delayed'::text,p.delayed), ('runs_pending_version'::text,p.pending_version)) f(metric, value))
UNION ALL
 SELECT 'workers'::text AS metric,
    s.state AS label,
    (COALESCE(w.n, (0)::bigint))::double precision AS value
   FROM (unnest('{active,lapsed,lost,stopped}'::text[]) s(state)
     LEFT JOIN workers w ON ((w.state = s.state)));

CREATE TABLE skiplock.migrations (
    name text NOT NULL,
    kind text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT migrations_kind_check CHECK ((kind = ANY (ARRAY['migration'::text, 'function'::text])))
);

CREATE TABLE skiplock.rate_buckets (
    queue text NOT NULL COLLATE pg_catalog."C",
    key text NOT NULL COLLATE pg_catalog."C",
    tat timestamp with time zone NOT NULL
)
WITH (fillfactor='50', autovacuum_vacuum_scale_factor='0.05', autovacuum_vacuum_cost_delay='0');

CREATE VIEW skiplock.queue_rate_stats AS
 SELECT b.queue,
    b.key,
    q.rate_limit,
    q.rate_period_s,
    q.rate_burst,
    (GREATEST(floor((s.budget + (0.000000001)::double precision)), (0)::double precision))::integer AS budget_left,
        CASE
            WHEN (s.budget >= (((1)::numeric - 0.000000001))::double precision) THEN skiplock.now()
            ELSE (b.tat - make_interval(secs => (((q.rate_burst - 1))::double precision * s."interval")))
        END AS next_allowed_at,
    b.tat
   FROM ((skiplock.rate_buckets b
     JOIN skiplock.queues q ON (((q.name = b.queue) AND (q.rate_limit IS NOT NULL))))
     CROSS JOIN LATERAL ( SELECT (q.rate_period_s / (q.rate_limit)::double precision) AS "interval",
            skiplock.rate_budget(b.tat, skiplock.now(), (q.rate_period_s / (q.rate_limit)::double precision), q.rate_burst) AS budget) s);

CREATE VIEW skiplock.queue_stats AS
 SELECT q.name,
    q.concurrency_limit,
    q.paused,
    ( SELECT count(*) AS count
           FROM skiplock.runs r
          WHERE ((r.queue = q.name) AND (r.status = 'QUEUED'::skiplock.run_status))) AS queued,
    ( SELECT count(*) AS count
           FROM skiplock.runs r
          WHERE ((r.queue = q.name) AND (r.status = ANY (ARRAY['DEQUEUED'::skiplock.run_status, 'EXECUTING'::skiplock.run_status])))) AS running,
    ( SELECT (skiplock.now() - min(r.order_at))
           FROM skiplock.runs r
          WHERE ((r.queue = q.name) AND (r.status = 'QUEUED'::skiplock.run_status))) AS oldest_queued_age,
    q.rate_limit,
    q.rate_period_s,
    q.rate_burst,
    COALESCE(k.waiting, (0)::bigint) AS rate_keys_waiting,
    k.next_allowed_at AS rate_next_allowed_at
   FROM (skiplock.queues q
     LEFT JOIN LATERAL ( SELECT count(*) AS waiting,
            min(s.next_allowed_at) AS next_allowed_at
           FROM skiplock.queue_rate_stats s
          WHERE ((s.queue = q.name) AND (s.budget_left = 0))) k ON ((q.rate_limit IS NOT NULL)));

CREATE TABLE skiplock.run_logs (
    run_id text NOT NULL COLLATE pg_catalog."C",
    seq bigint NOT NULL,
    attempt integer NOT NULL,
    at timestamp with time zone NOT NULL,
    level text NOT NULL,
    logger text NOT NULL,
    message text NOT NULL,
    exception text,
    dropped integer,
    bytes_before bigint NOT NULL
);

CREATE TABLE skiplock.run_steps (
    run_id text NOT NULL COLLATE pg_catalog."C",
    "position" integer NOT NULL,
    kind text NOT NULL COLLATE pg_catalog."C",
    name text NOT NULL COLLATE pg_catalog."C",
    output jsonb,
    waitpoint_id text COLLATE pg_catalog."C",
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    CONSTRAINT run_steps_kind_check CHECK ((kind = ANY (ARRAY['step'::text, 'wait'::text, 'token'::text, 'run'::text, 'batch'::text])))
);

CREATE TABLE skiplock.run_waitpoints (
    run_id text NOT NULL COLLATE pg_catalog."C",
    waitpoint_id text NOT NULL COLLATE pg_catalog."C",
    created_at timestamp with time zone NOT NULL,
    pending boolean DEFAULT false NOT NULL
)
WITH (autovacuum_vacuum_scale_factor='0.05', autovacuum_analyze_scale_factor='0.05', autovacuum_vacuum_cost_delay='0');

CREATE UNLOGGED TABLE skiplock.subscribers (
    pid integer NOT NULL,
    since timestamp with time zone DEFAULT now() NOT NULL
);

CREATE UNLOGGED TABLE skiplock.subscriptions (
    kind text NOT NULL COLLATE pg_catalog."C",
    key text NOT NULL COLLATE pg_catalog."C",
    pid integer NOT NULL,
    CONSTRAINT subscriptions_kind_check CHECK ((kind = ANY (ARRAY['run'::text, 'tag'::text, 'batch'::text, 'all'::text, 'logs'::text])))
);

CREATE VIEW skiplock.table_health AS
 SELECT c.relname AS table_name,
    pg_total_relation_size((c.oid)::regclass) AS total_bytes,
    pg_relation_size((c.oid)::regclass) AS table_bytes,
    pg_indexes_size((c.oid)::regclass) AS index_bytes,
    s.n_live_tup AS live_tuples,
    s.n_dead_tup AS dead_tuples,
    round(((s.n_dead_tup)::numeric / (NULLIF((s.n_live_tup + s.n_dead_tup), 0))::numeric), 3) AS dead_ratio,
    s.n_mod_since_analyze AS changed_since_analyze,
    GREATEST(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
    GREATEST(s.last_analyze, s.last_autoanalyze) AS last_analyze,
    (s.vacuum_count + s.autovacuum_count) AS vacuums,
    (s.analyze_count + s.autoanalyze_count) AS analyzes
   FROM ((pg_class c
     JOIN pg_namespace n ON ((n.oid = c.relnamespace)))
     LEFT JOIN pg_stat_user_tables s ON ((s.relid = c.oid)))
  WHERE ((n.nspname = 'skiplock'::name) AND (c.relkind = ANY (ARRAY['r'::"char", 'p'::"char"])));

CREATE TABLE skiplock.waitpoints (
    id text NOT NULL COLLATE pg_catalog."C",
    type skiplock.waitpoint_type NOT NULL,
    status skiplock.waitpoint_status DEFAULT 'PENDING'::skiplock.waitpoint_status NOT NULL,
    run_id text COLLATE pg_catalog."C",
    batch_id text COLLATE pg_catalog."C",
    pending_runs integer,
    completes_at timestamp with time zone,
    timeout_at timestamp with time zone,
    output jsonb,
    is_error boolean DEFAULT false NOT NULL,
    idempotency_key text COLLATE pg_catalog."C",
    idempotency_key_expires_at timestamp with time zone,
    tags text[] DEFAULT '{}'::text[] NOT NULL COLLATE pg_catalog."C",
    created_at timestamp with time zone NOT NULL,
    completed_at timestamp with time zone,
    results jsonb
)
WITH (autovacuum_vacuum_scale_factor='0.05', autovacuum_analyze_scale_factor='0.05', autovacuum_vacuum_cost_delay='0');

CREATE VIEW skiplock.worker_status AS
 SELECT id,
    version,
    hostname,
    pid,
    queues,
    concurrency,
    started_at,
    last_heartbeat_at,
    (skiplock.now() - last_heartbeat_at) AS heartbeat_age,
    lease_expires_at,
        CASE
            WHEN (stopped_at IS NOT NULL) THEN 'stopped'::text
            WHEN (lost_at IS NOT NULL) THEN 'lost'::text
            WHEN (lease_expires_at < skiplock.now()) THEN 'lapsed'::text
            ELSE 'active'::text
        END AS state,
    ( SELECT count(*) AS count
           FROM skiplock.runs r
          WHERE ((r.status = ANY (ARRAY['DEQUEUED'::skiplock.run_status, 'EXECUTING'::skiplock.run_status])) AND (r.worker_id = w.id))) AS runs_in_hand
   FROM skiplock.workers w;

ALTER TABLE ONLY skiplock.alerts
    ADD CONSTRAINT alerts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.attempts
    ADD CONSTRAINT attempts_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.attempts
    ADD CONSTRAINT attempts_run_number_key UNIQUE (run_id, number);

ALTER TABLE ONLY skiplock.batches
    ADD CONSTRAINT batches_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.debounces
    ADD CONSTRAINT debounces_pkey PRIMARY KEY (task_identifier, key);

ALTER TABLE ONLY skiplock.deployment_tasks
    ADD CONSTRAINT deployment_tasks_pkey PRIMARY KEY (task_identifier, version);

ALTER TABLE ONLY skiplock.deployments
    ADD CONSTRAINT deployments_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.maintenance
    ADD CONSTRAINT maintenance_pkey PRIMARY KEY (chore);

ALTER TABLE ONLY skiplock.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (name);

ALTER TABLE ONLY skiplock.queues
    ADD CONSTRAINT queues_pkey PRIMARY KEY (name);

ALTER TABLE ONLY skiplock.rate_buckets
    ADD CONSTRAINT rate_buckets_pkey PRIMARY KEY (queue, key);

ALTER TABLE ONLY skiplock.run_logs
    ADD CONSTRAINT run_logs_pkey PRIMARY KEY (run_id, seq);

ALTER TABLE ONLY skiplock.run_steps
    ADD CONSTRAINT run_steps_pkey PRIMARY KEY (run_id, "position");

ALTER TABLE ONLY skiplock.run_waitpoints
    ADD CONSTRAINT run_waitpoints_pkey PRIMARY KEY (run_id, waitpoint_id);

ALTER TABLE ONLY skiplock.runs
    ADD CONSTRAINT runs_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.schedules
    ADD CONSTRAINT schedules_deduplication_key_key UNIQUE (deduplication_key);

ALTER TABLE ONLY skiplock.schedules
    ADD CONSTRAINT schedules_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.subscribers
    ADD CONSTRAINT subscribers_pkey PRIMARY KEY (pid);

ALTER TABLE ONLY skiplock.subscriptions
    ADD CONSTRAINT subscriptions_pkey PRIMARY KEY (kind, key, pid);

ALTER TABLE ONLY skiplock.waitpoints
    ADD CONSTRAINT waitpoints_pkey PRIMARY KEY (id);

ALTER TABLE ONLY skiplock.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);

CREATE INDEX alerts_pending_idx ON skiplock.alerts USING btree (available_at) WHERE (state = 'PENDING'::text);

CREATE INDEX alerts_run_idx ON skiplock.alerts USING btree (run_id);

CREATE INDEX debounces_run_idx ON skiplock.debounces USING btree (run_id);

CREATE INDEX deployment_tasks_latest_idx ON skiplock.deployment_tasks USING btree (task_identifier, deployed_at DESC);

CREATE INDEX run_steps_waitpoint_idx ON skiplock.run_steps USING btree (waitpoint_id) WHERE (waitpoint_id IS NOT NULL);

CREATE INDEX run_waitpoints_pending_idx ON skiplock.run_waitpoints USING btree (run_id) WHERE pending;

CREATE INDEX run_waitpoints_waitpoint_idx ON skiplock.run_waitpoints USING btree (waitpoint_id);

CREATE INDEX runs_delayed_idx ON skiplock.runs USING btree (delayed_until) WHERE (status = 'DELAYED'::skiplock.run_status);

CREATE INDEX runs_expiring_idx ON skiplock.runs USING btree (expires_at) WHERE ((expires_at IS NOT NULL) AND (status = ANY (ARRAY['PENDING_VERSION'::skiplock.run_status, 'DELAYED'::skiplock.run_status, 'QUEUED'::skiplock.run_status])));

CREATE INDEX runs_failed_idx ON skiplock.runs USING btree (id) WHERE (status = ANY (ARRAY['FAILED'::skiplock.run_status, 'CRASHED'::skiplock.run_status, 'SYSTEM_FAILURE'::skiplock.run_status, 'TIMED_OUT'::skiplock.run_status, 'EXPIRED'::skiplock.run_status]));

CREATE UNIQUE INDEX runs_idempotency_idx ON skiplock.runs USING btree (task_identifier, idempotency_key) WHERE ((idempotency_key IS NOT NULL) AND (NOT idempotency_key_released) AND (status <> ALL (ARRAY['FAILED'::skiplock.run_status, 'CRASHED'::skiplock.run_status, 'SYSTEM_FAILURE'::skiplock.run_status, 'TIMED_OUT'::skiplock.run_status, 'EXPIRED'::skiplock.run_status])));

CREATE INDEX runs_parent_idx ON skiplock.runs USING btree (parent_id) WHERE (parent_id IS NOT NULL);

CREATE INDEX runs_parked_idx ON skiplock.runs USING btree (id) WHERE (status = ANY (ARRAY['PENDING_VERSION'::skiplock.run_status, 'DELAYED'::skiplock.run_status, 'WAITING'::skiplock.run_status]));

CREATE INDEX runs_pending_version_idx ON skiplock.runs USING btree (task_identifier) WHERE (status = 'PENDING_VERSION'::skiplock.run_status);

CREATE INDEX runs_purge_idx ON skiplock.runs USING btree (skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at)) WHERE ((finished_at IS NOT NULL) AND (retention_s IS NOT NULL));

CREATE INDEX runs_ready_idx ON skiplock.runs USING btree (queue, COALESCE(concurrency_key, ''::text), COALESCE(rate_limit_key, ''::text), order_at, id) WHERE (status = 'QUEUED'::skiplock.run_status);

CREATE UNIQUE INDEX runs_schedule_slot_idx ON skiplock.runs USING btree (schedule_id, schedule_slot) WHERE (schedule_id IS NOT NULL);

CREATE INDEX runs_slots_idx ON skiplock.runs USING btree (queue, COALESCE(concurrency_key, ''::text)) WHERE (status = ANY (ARRAY['DEQUEUED'::skiplock.run_status, 'EXECUTING'::skiplock.run_status]));

CREATE INDEX runs_tags_idx ON skiplock.runs USING gin (tags) WHERE (tags <> '{}'::text[]);

CREATE INDEX runs_task_idx ON skiplock.runs USING btree (task_identifier, id);

CREATE UNIQUE INDEX schedules_declared_idx ON skiplock.schedules USING btree (task_identifier) WHERE (type = 'DECLARATIVE'::text);

CREATE INDEX schedules_due_idx ON skiplock.schedules USING btree (next_slot) WHERE active;

CREATE INDEX schedules_task_idx ON skiplock.schedules USING btree (task_identifier, id);

CREATE UNIQUE INDEX waitpoints_batch_idx ON skiplock.waitpoints USING btree (batch_id) WHERE (type = 'BATCH'::skiplock.waitpoint_type);

CREATE INDEX waitpoints_completed_token_idx ON skiplock.waitpoints USING btree (completed_at) WHERE ((type = 'TOKEN'::skiplock.waitpoint_type) AND (status = 'COMPLETED'::skiplock.waitpoint_status));

CREATE INDEX waitpoints_datetime_due_idx ON skiplock.waitpoints USING btree (completes_at) WHERE ((status = 'PENDING'::skiplock.waitpoint_status) AND (type = 'DATETIME'::skiplock.waitpoint_type));

CREATE UNIQUE INDEX waitpoints_run_idx ON skiplock.waitpoints USING btree (run_id) WHERE (type = 'RUN'::skiplock.waitpoint_type);

CREATE UNIQUE INDEX waitpoints_token_key_idx ON skiplock.waitpoints USING btree (idempotency_key) WHERE ((type = 'TOKEN'::skiplock.waitpoint_type) AND (idempotency_key IS NOT NULL));

CREATE INDEX waitpoints_token_timeout_idx ON skiplock.waitpoints USING btree (timeout_at) WHERE ((status = 'PENDING'::skiplock.waitpoint_status) AND (type = 'TOKEN'::skiplock.waitpoint_type) AND (timeout_at IS NOT NULL));

CREATE INDEX workers_lease_idx ON skiplock.workers USING btree (lease_expires_at) WHERE ((stopped_at IS NULL) AND (lost_at IS NULL));

CREATE TRIGGER runs_delete_attempts AFTER DELETE ON skiplock.runs REFERENCING OLD TABLE AS deleted_runs FOR EACH STATEMENT EXECUTE FUNCTION skiplock.delete_attempts_of_deleted_runs();

CREATE TRIGGER runs_failed_alert AFTER UPDATE OF status ON skiplock.runs FOR EACH ROW WHEN (((new.status = ANY (ARRAY['FAILED'::skiplock.run_status, 'CRASHED'::skiplock.run_status, 'SYSTEM_FAILURE'::skiplock.run_status, 'TIMED_OUT'::skiplock.run_status])) AND (old.status IS DISTINCT FROM new.status))) EXECUTE FUNCTION skiplock.on_run_failed();

CREATE TRIGGER runs_waited_on_final AFTER UPDATE OF status ON skiplock.runs FOR EACH ROW WHEN (new.waited_on) EXECUTE FUNCTION skiplock.on_waited_run_final();

ALTER TABLE ONLY skiplock.run_steps
    ADD CONSTRAINT run_steps_run_id_fkey FOREIGN KEY (run_id) REFERENCES skiplock.runs(id) ON DELETE CASCADE;

ALTER TABLE ONLY skiplock.run_steps
    ADD CONSTRAINT run_steps_waitpoint_id_fkey FOREIGN KEY (waitpoint_id) REFERENCES skiplock.waitpoints(id);

ALTER TABLE ONLY skiplock.run_waitpoints
    ADD CONSTRAINT run_waitpoints_run_id_fkey FOREIGN KEY (run_id) REFERENCES skiplock.runs(id) ON DELETE CASCADE;

ALTER TABLE ONLY skiplock.run_waitpoints
    ADD CONSTRAINT run_waitpoints_waitpoint_id_fkey FOREIGN KEY (waitpoint_id) REFERENCES skiplock.waitpoints(id) ON DELETE CASCADE;

ALTER TABLE ONLY skiplock.runs
    ADD CONSTRAINT runs_parent_id_fkey FOREIGN KEY (parent_id) REFERENCES skiplock.runs(id) ON DELETE SET NULL;
