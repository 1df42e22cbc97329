-- Dequeue and attempt start: how a worker takes work, in one of two ways.
-- claim (complete_and_claim): QUEUED -> EXECUTING in one call, one commit. The Python
--   worker's way.
-- dequeue, then start_attempts: the two-step claim, the SQL API for drivers in other
--   languages: dequeue leases runs in DEQUEUED, holding their slots; start_attempts
--   moves them to EXECUTING.
--   tests/test_sql_api.py drives a run's whole life this way.

-- rate_schedule: where a rate key's GCRA schedule stands at p_now: its theoretical
-- arrival time p_tat (NULL: no row), unless that is more than a grace in the past, when
-- the schedule restarts at p_now (an idle key saves up no budget beyond its burst). The
-- grace, least(a quarter interval, 25 ms), keeps the schedule when a claim comes a little
-- after the run's time (a worker's wake-up and round trip: 1-13 ms on a loaded 2-core
-- machine, tests/test_rate_limits.py): plain GCRA restarts it at each late claim, which
-- pushes every later run back, so that a limit of 10/s with burst 1 ran at about
-- 1 / (100 ms + lateness). The grace being under one interval, no window of one period
-- holds more than limit + burst starts, as with plain GCRA (README, Rate limits).
CREATE OR REPLACE FUNCTION skiplock.rate_schedule(
    p_tat timestamptz, p_now timestamptz, p_interval double precision)
RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_tat >= p_now - make_interval(secs => least(p_interval / 4, 0.025))
                THEN p_tat ELSE p_now END
$$;

-- rate_budget: the units of budget a rate key has at p_now (at most burst, fractional
-- while it refills, negative after a run costing more than the burst): a run of cost c
-- may start when least(c, burst) <= budget. p_interval: period / limit, in seconds.
CREATE OR REPLACE FUNCTION skiplock.rate_budget(
    p_tat timestamptz, p_now timestamptz, p_interval double precision, p_burst integer)
RETURNS double precision
LANGUAGE sql STABLE AS $$
    SELECT p_burst - extract(epoch FROM skiplock.rate_schedule(p_tat, p_now, p_interval) - p_now)
                     ::double precision / p_interval
$$;

-- lock_ready: lock up to p_limit ready runs for a worker of version p_version and return
-- their ids; retry_in: NULL, or the seconds after which a run held back by its queue's
-- rate limit may start (the earliest such), for the worker to claim again then. A worker
-- takes runs locked to its version, and unlocked runs of the tasks for which its version
-- is the latest deployment. p_queues NULL: all queues.
-- Admission: the units (queue, concurrency key, rate_limit_key) with ready runs are
-- visited oldest head first, paused queues skipped. An unlimited unit gives runs in queue
-- order. A limited unit is admitted under a transaction-scoped advisory lock on (queue,
-- concurrency key) (a unit another worker is admitting is skipped, never waited for):
-- its slot holders (DEQUEUED and EXECUTING runs) are counted and at most limit - holders
-- runs are taken, so the limit holds across any number of workers; the lock is held
-- until the claim commits. Runs of one concurrency key with different rate_limit_keys are
-- separate units sharing its slots: once such a unit is seen, the runs this call took
-- count as holders too.
-- Rate-limited units (the queue has rate_limit): the run's rate key is its
-- rate_limit_key, else its concurrency key, else ''. Under a transaction-scoped advisory
-- lock on (queue, rate key) (skipped when another worker holds it: retry_in 10 ms), GCRA
-- on skiplock.rate_buckets: runs are taken in order while their cost fits the budget
-- (rate_budget), each moving the key's tat on by cost * period / limit, and the new tat
-- is written in this transaction. A unit without budget is skipped after one row read:
-- it delays no other unit. Queues without a rate limit take the path they always took.
-- Locks: advisory xact locks of limited units and rate keys; runs rows FOR UPDATE SKIP
-- LOCKED (a rate-limited unit locks one run past its budget, to learn when it may start);
-- the rate_buckets rows written.
-- Plans, pinned here and in the other hot-path functions (the SET clauses): each reads
-- O(batch) rows through indexes (here runs_ready_idx, runs_slots_idx: O(units + p_limit)
-- whatever the backlog), but a queue table's statistics are stale by nature (taken
-- empty, read full) and the planner then chose otherwise: it sorted the whole backlog
-- (15 ms a call at 20k queued instead of 2.3). Hence sorts, sequential scans, hash or
-- merge joins off where they could come up; and jit off with them, since a disabled node
-- costs 10^10 on PostgreSQL 15-17, over jit_above_cost (with LLVM a claim took 170-260 ms
-- instead of 0.3). Generic plans too: with array parameters every call was planned
-- anew, up to 20 us a run claimed.
-- A unit's runs are read from its head on ((order_at, id) >= the head's, which the skip
-- scan found): a drained queue's index holds an entry for every run claimed since the
-- last vacuum (their rows are no longer QUEUED), and each scan from the unit's start
-- stepped over all of them again: lock_ready took 0.37 ms at the start of a drain of
-- 20,000 and 1.03 ms at its end. Only the skip scan walks them now. A run queued again
-- ahead of the head meanwhile (a retry keeps its place) is taken by the next claim.
CREATE OR REPLACE FUNCTION skiplock.lock_ready(
    p_version text, p_tasks text[], p_queues text[], p_limit integer,
    OUT ids text[], OUT retry_in double precision)
LANGUAGE plpgsql
SET enable_sort = off SET enable_seqscan = off SET jit = off
SET plan_cache_mode = force_generic_plan
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

-- dequeue: step 1 of the two-step claim for drivers in other languages. Lease up to
-- p_limit ready runs to worker p_worker_id (QUEUED -> DEQUEUED), locking each to
-- p_version (see lock_ready for which runs a version takes). p_worker_id must be
-- registered (register_worker) and neither stopped nor lost, else nothing is leased.
-- A DEQUEUED run holds its queue slot until start_attempts starts it. One never started
-- goes back to QUEUED, keeping its place, when the worker stops (stop_worker) or its
-- lease lapses (tick); a live worker keeps it until then. A run held back by a rate
-- limit is announced to nobody when its time comes: a driver polls (claim, the worker's
-- way, also says when that time is: its retry_in).
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

-- begin_attempts: move the given runs (in status p_from; DEQUEUED ones only if leased to
-- p_worker_id) to EXECUTING under attempts of p_worker_id: a new attempt, or, for a run
-- resuming from a wait, its suspended one. p_version, if given, locks the runs to it.
-- One UPDATE and one INSERT for the set; started_at is stamped by skiplock.clock(), after
-- whatever admission the caller did. Returns the attempts with what a worker needs, in
-- queue order; `resumed`: the attempt continues after a wait (its hooks say on_resume);
-- `queue` and `trace_context` (NULL if the trigger was not traced): for a worker that
-- traces (its attempt's span starts in that context), selected only by such a worker;
-- `log`, for an attempt that resumes, the run's durable call log (run_log's rows as a
-- jsonb array, what its replay needs: no read of its own), else NULL.
CREATE OR REPLACE FUNCTION skiplock.begin_attempts(
    p_worker_id text, p_version text, p_run_ids text[], p_from skiplock.run_status)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               max_duration double precision, attempt_id text, attempt_number integer,
               resumed boolean, queue text, trace_context jsonb, log jsonb)
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

-- complete_and_claim: a worker's hot path, one transaction: record the successes in
-- p_results (as complete_attempts; NULL for none), then claim up to p_limit runs (claim
-- is this with no completions). The worker starts what it claimed once this commits, so
-- the claim must be as durable as any other commit: lost to a server crash, it would
-- leave the run queued while the worker runs it, and run it twice. One commit (one WAL
-- flush) for both halves makes that cheap. Completing first frees the slots of limited
-- queues for the claim. The statements of complete_attempts and of begin_attempts (from
-- QUEUED) are written out here, not called: each function called costs its own SET
-- clauses (saved and restored at every call) and a copy of the rows it returns, and one
-- notify_runs call serves both halves. Backend CPU a run of a drain, 20,000 runs at 50 a
-- call, alternated (PostgreSQL 15): 0.90x; at 25 a call (two claim lanes) 0.94x.
-- tests/test_sql_api.py drives the called functions; the worker drives this one.
-- Locks: the worker row FOR SHARE first (see worker_is_active; taken before the runs the
-- completions lock, in the order crash_lost_workers takes them, so the two cannot
-- deadlock), then as complete_attempts, then as lock_ready. Returns as claim (with its
-- last row without a run when a rate limit held a run back); a worker no longer active
-- (stopped, or declared lost) gets its completions recorded and claims nothing.
CREATE OR REPLACE FUNCTION skiplock.complete_and_claim(
    p_results jsonb, p_worker_id text, p_version text, p_tasks text[], p_queues text[],
    p_limit integer)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               max_duration double precision, attempt_id text, attempt_number integer,
               resumed boolean, queue text, trace_context jsonb, log jsonb,
               retry_in double precision)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan
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

-- claim: dequeue and start attempts in one call (QUEUED -> EXECUTING; DEQUEUED is never
-- visible outside the transaction), for a worker that starts what it takes at once.
-- One commit and one row version per run instead of two of each. complete_and_claim
-- with no completions: the worker's way, for drivers in other languages.
-- Locks: as complete_and_claim. Returns each started attempt with its run's task,
-- payload, metadata and max_duration, in queue order; then, when a rate limit held a run
-- back, one more row without a run (run_id NULL) whose retry_in says in how many seconds
-- it may start (see lock_ready): no NOTIFY comes then, so the caller claims again at that
-- time. retry_in is NULL in the rows of attempts. A worker no longer active claims nothing.
CREATE OR REPLACE FUNCTION skiplock.claim(
    p_worker_id text, p_version text, p_tasks text[], p_queues text[], p_limit integer)
RETURNS TABLE (run_id text, task_identifier text, payload jsonb, metadata jsonb,
               max_duration double precision, attempt_id text, attempt_number integer,
               resumed boolean, queue text, trace_context jsonb, log jsonb,
               retry_in double precision)
LANGUAGE sql AS $$
    SELECT * FROM skiplock.complete_and_claim(NULL, p_worker_id, p_version, p_tasks, p_queues,
                                              p_limit)
$$;
