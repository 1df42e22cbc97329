-- Attempt outcomes: completion, failure, retry. Every write here is fenced by attempt:
-- it applies only while the attempt is the run's current one and still EXECUTING, so a
-- late result from a canceled, timed-out or superseded attempt changes nothing.

-- complete_attempts: record successes in one statement.
-- p_results: [{"attempt_id": ..., "output": <json>, "metadata": <json, optional>}]; a
-- metadata given (at most 256 KB) replaces the run's: the attempt's last changes, written
-- with its outcome.
-- Locks: the attempts and runs rows named.
-- Returns the run ids whose completion was accepted.
CREATE OR REPLACE FUNCTION skiplock.complete_attempts(p_results jsonb)
RETURNS TABLE (run_id text)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET enable_bitmapscan = off SET plan_cache_mode = force_generic_plan
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

-- executing_run: the run whose current attempt is p_attempt_id, locked, if it is EXECUTING
-- (else a row of NULLs: the attempt is no longer current, its outcome is fenced off).
-- Locks: the run row.
-- (PL/pgSQL for its cached plan: see worker_is_active.)
CREATE OR REPLACE FUNCTION skiplock.executing_run(p_attempt_id text)
RETURNS skiplock.runs
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
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

-- fail_attempt: record a failed attempt. p_status is FAILED, TIMED_OUT or SYSTEM_FAILURE
-- (an engine-detected error such as a replay that is not deterministic; never retried).
-- With p_retry_delay (seconds) and attempts left, a FAILED attempt sends the run back to
-- QUEUED, dequeueable after the delay and keeping its place in line; otherwise the run
-- ends in p_status (a final failure releases its idempotency key).
-- Locks: the run row, then the attempt row.
-- Returns the run's new status, or NULL when the attempt was no longer current.
CREATE OR REPLACE FUNCTION skiplock.fail_attempt(
    p_attempt_id text, p_error jsonb, p_status skiplock.run_status DEFAULT 'FAILED',
    p_retry_delay double precision DEFAULT NULL)
RETURNS skiplock.run_status
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
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

-- interrupt_attempt: the attempt's own worker is shutting down and could not let it finish
-- within its grace period. The run goes back to QUEUED at once with its attempt suspended,
-- as after a wait: the next claim continues that attempt (its number, its durable log), so
-- the interruption does not count against max_attempts. A run interrupted p_max times
-- ends FAILED instead (a task that always outlives the grace period must end somewhere).
-- Locks: the run row, then the attempt row.
-- Returns the run's new status (QUEUED or FAILED), or NULL when the attempt was no longer
-- current (canceled, crashed, fenced meanwhile).
CREATE OR REPLACE FUNCTION skiplock.interrupt_attempt(
    p_attempt_id text, p_error jsonb, p_max integer DEFAULT 10)
RETURNS skiplock.run_status
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
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
