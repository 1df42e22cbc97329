-- Workers and deployments: registration, heartbeat, orderly stop.

-- worker_is_active: the worker is registered and neither stopped nor declared lost. A
-- worker that is not takes no run (its lease is gone, so nobody would ever crash or
-- requeue what it took): it must register anew.
-- Locks: the worker row FOR SHARE, until the caller commits. A claim in flight thereby
-- keeps maintenance (crash_lost_workers: FOR UPDATE SKIP LOCKED) from declaring its
-- worker lost before the runs it takes are visible: lost meanwhile, the worker would
-- hold them with nobody to ever crash or requeue them (found by the fault soak). A
-- worker being declared lost makes the claim wait, then find it lost.
-- PL/pgSQL, not SQL: a SQL function that cannot be inlined (this one locks) is planned
-- anew at every call, 90-100 us here against 17 with PL/pgSQL's cached plan, and every
-- claim calls it (bench/drain_matrix.py).
CREATE OR REPLACE FUNCTION skiplock.worker_is_active(p_worker_id text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RETURN EXISTS (SELECT 1 FROM skiplock.workers w
                    WHERE w.id = p_worker_id AND w.lost_at IS NULL AND w.stopped_at IS NULL
                      FOR SHARE);
END;
$$;

-- set_worker_polls: the worker (just registered) polls for work and cancels instead of
-- listening (poll-only mode, behind a pooler): wake() sends nothing on its account.
CREATE OR REPLACE FUNCTION skiplock.set_worker_polls(p_worker_id text) RETURNS void
LANGUAGE sql AS $$
    UPDATE skiplock.workers SET polls = true WHERE id = p_worker_id
$$;

-- seconds_or_forever: p_obj's key p_key as seconds: NULL when absent, 'Infinity' when
-- JSON null (keep forever).
CREATE OR REPLACE FUNCTION skiplock.seconds_or_forever(p_obj jsonb, p_key text)
RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_obj ? p_key
                THEN coalesce((p_obj->>p_key)::double precision, 'Infinity') END
$$;

-- register_worker: record a worker and its deployment (version + task set), create
-- the queues its tasks declare, and release PENDING_VERSION runs the deployment can
-- now serve (to DELAYED if their delay is still ahead, else QUEUED); a run triggered
-- while this registration was in flight is released by the next tick.
-- p_tasks: [{"id", "queue", "concurrency_limit", "max_attempts", "max_duration", "ttl",
--           "retention", "queue_retention", "default_retention", "rate_limit"}]; the
--           retentions are seconds, JSON null for forever, absent when not declared;
--           "rate_limit" is the queue's {"limit", "period" (s), "burst"}, JSON null for
--           none, absent when not declared (see set_queue_rate_limit); "cron",
--           "timezone", "catch_up" of a task declaring a schedule (sync_declared_schedules).
-- Locks: deployment_tasks rows of its tasks; the released runs (SKIP LOCKED).
-- Returns the deployment id.
CREATE OR REPLACE FUNCTION skiplock.register_worker(
    p_worker_id text, p_version text, p_hostname text, p_pid integer,
    p_queues text[], p_concurrency integer, p_tasks jsonb, p_lease_seconds double precision DEFAULT 30)
RETURNS text
LANGUAGE plpgsql AS $$
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

-- release_lost_attempts: see heartbeat. Returns the number of runs released.
CREATE OR REPLACE FUNCTION skiplock.release_lost_attempts(p_worker_id text, p_held text[])
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
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

-- heartbeat: renew the worker's lease and tell it which of the attempts it believes it is
-- running are no longer current (canceled, crashed after a lapsed lease): it must stop
-- those. Returns NULL when the worker is unknown or was declared lost (its lease lapsed
-- and its runs were crashed): such a worker must stop everything and register anew.
-- p_attempt_ids lists every attempt the worker holds: running, or finished with the
-- outcome not yet recorded; the worker never sends it while a claim is in flight. So a
-- run EXECUTING under this worker with an attempt not listed is one the worker lost
-- track of (a claim whose reply never arrived, an outcome it gave up recording): nobody
-- will finish it. Its attempt is CRASHED and the run is queued again if it has tries
-- left (keeping its place), else CRASHED.
-- Locks: the worker row, then its unlisted runs (SKIP LOCKED) and their attempts.
CREATE OR REPLACE FUNCTION skiplock.heartbeat(p_worker_id text, p_attempt_ids text[])
RETURNS text[]
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
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

-- release_worker_runs: a worker gives up every run it holds, or is made to: runs it
-- dequeued but never started go back to QUEUED (keeping their place in line), and runs
-- it started (EXECUTING) are CRASHED, not retried, with p_error, their attempts too (which
-- fences any late write). A run never stays with a worker that is gone.
-- Locks: the worker's runs, then their attempts. Returns the number of runs released.
CREATE OR REPLACE FUNCTION skiplock.release_worker_runs(p_worker_id text, p_error jsonb)
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off  -- its runs via runs_slots_idx, whatever the stats
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

-- stop_worker: an orderly stop. The worker is marked stopped and releases what it still
-- holds (release_worker_runs): after a drain that is nothing, or the runs whose results
-- it could not record. Returns the number of runs released.
CREATE OR REPLACE FUNCTION skiplock.stop_worker(p_worker_id text) RETURNS integer
LANGUAGE plpgsql AS $$
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

-- peer_workers: how many workers other than p_worker_id hold a current lease (neither
-- stopped nor lost, lease not lapsed). A worker whose claim lanes are automatic records
-- its completions apart from its claims while it has no peer (engine/worker/claims.py);
-- registering and stopping NOTIFY channel skiplock_workers (payload: the worker's id) so
-- that the others count again at once; a lost worker drops out of the count when its
-- lease lapses.
CREATE OR REPLACE FUNCTION skiplock.peer_workers(p_worker_id text) RETURNS integer
LANGUAGE sql STABLE AS $$
    SELECT count(*)::integer FROM skiplock.workers w
     WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND w.lease_expires_at > skiplock.now()
       AND w.id <> p_worker_id
$$;

-- release_pending_versions: PENDING_VERSION runs whose task (at its pinned version, if
-- pinned) now has a deployment become DELAYED (delay still ahead) or QUEUED. A run
-- triggered without a queue takes the deployed task's queue. At most p_limit runs
-- (NULL: all) of tasks p_tasks (NULL: all).
-- Locks: the released runs, SKIP LOCKED. Returns how many were released.
CREATE OR REPLACE FUNCTION skiplock.release_pending_versions(p_tasks text[], p_limit integer)
RETURNS integer
LANGUAGE plpgsql AS $$
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

-- crash_lost_workers: for up to p_batch workers whose lease lapsed (process killed, host
-- gone, partitioned), crash their started runs (EXECUTING -> CRASHED, not retried) and
-- requeue the runs they never started (DEQUEUED -> QUEUED, keeping their place), which
-- frees their slots; the worker is marked lost, and its late writes are fenced off.
-- Locks: the worker rows (SKIP LOCKED), then its runs, then their attempts.
-- Returns the number of runs crashed or requeued.
CREATE OR REPLACE FUNCTION skiplock.crash_lost_workers(p_batch integer DEFAULT 100)
RETURNS integer
LANGUAGE plpgsql AS $$
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
