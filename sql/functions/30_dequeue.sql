-- Dequeue and attempt start: how a worker takes work, in one of two ways.
-- claim (complete_and_claim): QUEUED -> EXECUTING in one call, one commit. The Python
--   worker's way.
-- dequeue, then start_attempts: the two-step claim, the SQL API for drivers in other
--   languages: dequeue leases runs in DEQUEUED, holding their slots; start_attempts
--   moves them to EXECUTING.
--   tests/test_sql_api.py drives a run's whole life this way.

-- lock_ready: lock up to p_limit ready runs for a worker of version p_version and return
-- their ids. A worker takes runs locked to its version, and unlocked runs of the tasks for
-- which its version is the latest deployment. p_queues NULL: all queues.
-- Admission: the units (queue, concurrency key) with ready runs are visited oldest head
-- first, paused queues skipped. An unlimited unit gives runs in queue order. A limited
-- unit is admitted under a transaction-scoped advisory lock on the unit (a unit another
-- worker is admitting is skipped, never waited for): its slot holders (DEQUEUED and
-- EXECUTING runs) are counted and at most limit - holders runs are taken, so the limit
-- holds across any number of workers; the lock is held until the claim commits.
-- Locks: advisory xact locks of limited units; runs rows FOR UPDATE SKIP LOCKED.
-- Plans, pinned here and in the other hot-path functions (the SET clauses): each reads
-- O(batch) rows through indexes (here runs_ready_idx, runs_slots_idx: O(units + p_limit)
-- whatever the backlog), but a queue table's statistics are stale by nature (taken
-- empty, read full) and the planner then chose otherwise: it sorted the whole backlog
-- (15 ms a call at 20k queued instead of 2.3). Hence sorts, sequential scans, hash or
-- merge joins off where they could come up; and jit off with them, since a disabled node
-- costs 10^10 on PostgreSQL 15-17, over jit_above_cost (with LLVM a claim took 170-260 ms
-- instead of 0.3). Generic plans too: with array parameters every call was planned
-- anew, up to 20 us a run claimed.
CREATE OR REPLACE FUNCTION skiplock.lock_ready(
    p_version text, p_tasks text[], p_queues text[], p_limit integer)
RETURNS text[]
LANGUAGE plpgsql
SET enable_sort = off SET enable_seqscan = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_now     timestamptz := skiplock.now();
    v_latest  text[];
    v_ids     text[] := '{}';
    v_unit    record;
    v_take    integer;
    v_holders integer;
BEGIN
    -- tasks whose newest deployment is this worker's version
    v_latest := ARRAY(
        SELECT t FROM unnest(p_tasks) t
         WHERE (SELECT d.version FROM skiplock.deployment_tasks d
                 WHERE d.task_identifier = t
                 ORDER BY d.deployed_at DESC, d.version DESC LIMIT 1) = p_version);
    FOR v_unit IN
        WITH RECURSIVE units AS (  -- skip scan: the head run of each unit
            (SELECT r.queue, coalesce(r.concurrency_key, '') AS ckey, r.order_at
               FROM skiplock.runs r WHERE r.status = 'QUEUED'
              ORDER BY r.queue, coalesce(r.concurrency_key, ''), r.order_at, r.id LIMIT 1)
            UNION ALL
            SELECT n.queue, n.ckey, n.order_at FROM units u CROSS JOIN LATERAL (
                SELECT r.queue, coalesce(r.concurrency_key, '') AS ckey, r.order_at
                  FROM skiplock.runs r
                 WHERE r.status = 'QUEUED'
                   AND (r.queue, coalesce(r.concurrency_key, '')) > (u.queue, u.ckey)
                 ORDER BY r.queue, coalesce(r.concurrency_key, ''), r.order_at, r.id
                 LIMIT 1) n)
        SELECT u.queue, u.ckey, q.concurrency_limit
          FROM units u LEFT JOIN skiplock.queues q ON q.name = u.queue
         WHERE NOT coalesce(q.paused, false) AND (p_queues IS NULL OR u.queue = ANY (p_queues))
         ORDER BY u.order_at
    LOOP
        v_take := p_limit - cardinality(v_ids);
        EXIT WHEN v_take <= 0;
        IF v_unit.concurrency_limit IS NOT NULL THEN
            CONTINUE WHEN NOT pg_try_advisory_xact_lock(
                hashtext('skiplock.unit'), hashtext(v_unit.queue || chr(31) || v_unit.ckey));
            SELECT count(*) INTO v_holders FROM skiplock.runs r
             WHERE r.queue = v_unit.queue AND coalesce(r.concurrency_key, '') = v_unit.ckey
               AND r.status IN ('DEQUEUED', 'EXECUTING');
            v_take := least(v_take, v_unit.concurrency_limit - v_holders);
            CONTINUE WHEN v_take <= 0;
        END IF;
        v_ids := v_ids || ARRAY(
            SELECT r.id FROM skiplock.runs r
             WHERE r.queue = v_unit.queue AND coalesce(r.concurrency_key, '') = v_unit.ckey
               AND r.status = 'QUEUED' AND r.available_at <= v_now
               AND (r.expires_at IS NULL OR r.expires_at > v_now)  -- never start an expired run
               AND ((r.version IS NULL AND r.task_identifier = ANY (v_latest))
                    OR (r.version = p_version AND r.task_identifier = ANY (p_tasks)))
             ORDER BY r.order_at, r.id
             LIMIT v_take
             FOR UPDATE SKIP LOCKED);
    END LOOP;
    RETURN v_ids;
END;
$$;

-- dequeue: step 1 of the two-step claim for drivers in other languages. Lease up to
-- p_limit ready runs to worker p_worker_id (QUEUED -> DEQUEUED), locking each to
-- p_version (see lock_ready for which runs a version takes). p_worker_id must be
-- registered (register_worker) and neither stopped nor lost, else nothing is leased.
-- A DEQUEUED run holds its queue slot until start_attempts starts it. One never started
-- goes back to QUEUED, keeping its place, when the worker stops (stop_worker) or its
-- lease lapses (tick); a live worker keeps it until then.
-- Locks: the worker row FOR SHARE (worker_is_active), then as lock_ready.
-- Returns the leased runs with what a worker needs to execute them.
CREATE OR REPLACE FUNCTION skiplock.dequeue(
    p_worker_id text, p_version text, p_tasks text[], p_queues text[], p_limit integer)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               attempt_count integer, max_attempts integer, max_duration double precision)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_ids text[];
BEGIN
    IF NOT skiplock.worker_is_active(p_worker_id) THEN
        RETURN;
    END IF;
    v_ids := skiplock.lock_ready(p_version, p_tasks, p_queues, p_limit);
    PERFORM skiplock.notify_runs(v_ids);
    RETURN QUERY
    UPDATE skiplock.runs r
       SET status = 'DEQUEUED', version = p_version, worker_id = p_worker_id, updated_at = v_now
     WHERE r.id = ANY (v_ids)
    RETURNING r.id, r.task_identifier, r.payload, r.metadata, r.attempt_count,
              r.max_attempts, r.max_duration;
END;
$$;

-- begin_attempts: move the given runs (in status p_from; DEQUEUED ones only if leased to
-- p_worker_id) to EXECUTING under attempts of p_worker_id: a new attempt, or, for a run
-- resuming from a wait, its suspended one. p_version, if given, locks the runs to it.
-- One UPDATE and one INSERT for the set; started_at is stamped by skiplock.clock(), after
-- whatever admission the caller did. Returns the attempts with what a worker needs, in
-- queue order; `resumed`: the attempt continues after a wait (its hooks say on_resume);
-- `queue` and `trace_context` (NULL if the trigger was not traced): for a worker that
-- traces (its attempt's span starts in that context), selected only by such a worker.
CREATE OR REPLACE FUNCTION skiplock.begin_attempts(
    p_worker_id text, p_version text, p_run_ids text[], p_from skiplock.run_status)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               max_duration double precision, attempt_id text, attempt_number integer,
               resumed boolean, queue text, trace_context jsonb)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET plan_cache_mode = force_generic_plan
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
    inserted AS (
        INSERT INTO skiplock.attempts AS a (id, run_id, number, status, worker_id, started_at)
        SELECT s.current_attempt_id, s.id, s.attempt_count, 'EXECUTING', p_worker_id, v_now
          FROM started s
        ON CONFLICT (id) DO UPDATE SET status = 'EXECUTING', worker_id = excluded.worker_id)
    SELECT s.id, s.task_identifier, s.payload, s.metadata, s.max_duration, s.current_attempt_id,
           s.attempt_count, s.suspended, s.queue, s.trace_context
      FROM started s
     ORDER BY s.order_at, s.id;
END;
$$;

-- start_attempts: step 2 of the two-step claim for drivers in other languages. Begin
-- the next attempt of each given run DEQUEUED to p_worker_id (DEQUEUED -> EXECUTING).
-- Runs no longer DEQUEUED to this worker (canceled, or requeued after its lease lapsed)
-- are skipped. The driver then runs each attempt, lists it in every heartbeat until its
-- outcome is recorded (an attempt left out is taken as lost: see heartbeat), and records
-- the outcome with complete_attempts or fail_attempt, all fenced by attempt.
-- Locks: the worker row FOR SHARE, then the runs. Returns (run_id, attempt_id,
-- attempt_number) of the attempts started.
CREATE OR REPLACE FUNCTION skiplock.start_attempts(p_worker_id text, p_run_ids text[])
RETURNS TABLE (run_id text, attempt_id text, attempt_number integer)
LANGUAGE sql AS $$
    SELECT b.run_id, b.attempt_id, b.attempt_number
      FROM skiplock.begin_attempts(p_worker_id, NULL, p_run_ids, 'DEQUEUED') b
$$;

-- claim: dequeue and start attempts in one call (QUEUED -> EXECUTING; DEQUEUED is never
-- visible outside the transaction), for a worker that starts what it takes at once.
-- One commit and one row version per run instead of two of each: the worker's hot path.
-- Locks: as lock_ready. Returns each started attempt with its run's task, payload,
-- metadata and max_duration, in queue order.
CREATE OR REPLACE FUNCTION skiplock.claim(
    p_worker_id text, p_version text, p_tasks text[], p_queues text[], p_limit integer)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               max_duration double precision, attempt_id text, attempt_number integer,
               resumed boolean, queue text, trace_context jsonb)
LANGUAGE sql AS $$
    SELECT * FROM skiplock.begin_attempts(
        p_worker_id, p_version, skiplock.lock_ready(p_version, p_tasks, p_queues, p_limit),
        'QUEUED')
$$;

-- complete_and_claim: a worker's hot path, one transaction: record the successes in
-- p_results (as complete_attempts; NULL for none), then claim up to p_limit runs (as
-- claim). The worker starts what it claimed once this commits, so the claim must be as
-- durable as any other commit: lost to a server crash, it would leave the run queued
-- while the worker runs it, and run it twice. One commit (one WAL flush) for both halves
-- makes that cheap. Completing first frees the slots of limited queues for the claim.
-- Locks: the worker row FOR SHARE first (see worker_is_active; taken before the runs the
-- completions lock, in the order crash_lost_workers takes them, so the two cannot
-- deadlock), then as complete_attempts, then as lock_ready. Returns as claim.
CREATE OR REPLACE FUNCTION skiplock.complete_and_claim(
    p_results jsonb, p_worker_id text, p_version text, p_tasks text[], p_queues text[],
    p_limit integer)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               max_duration double precision, attempt_id text, attempt_number integer,
               resumed boolean, queue text, trace_context jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM skiplock.worker_is_active(p_worker_id);
    IF p_results IS NOT NULL THEN
        PERFORM skiplock.complete_attempts(p_results);
    END IF;
    IF p_limit > 0 THEN
        RETURN QUERY SELECT * FROM skiplock.claim(p_worker_id, p_version, p_tasks, p_queues,
                                                  p_limit);
    END IF;
END;
$$;
