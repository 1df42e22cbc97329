-- Attempt outcomes: completion, failure, retry. Every write here is fenced by attempt:
-- it applies only while the attempt is the run's current one and still EXECUTING, so a
-- late result from a canceled, timed-out or superseded attempt changes nothing.

-- complete_attempts: record successes in one statement.
-- p_results: [{"attempt_id": ..., "output": <json>}].
-- Locks: the attempts and runs rows named.
-- Returns the run ids whose completion was accepted.
CREATE OR REPLACE FUNCTION skiplock.complete_attempts(p_results jsonb)
RETURNS TABLE (run_id text)
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    -- plans pinned to index nested loops: see lock_ready in 30_dequeue.sql
    RETURN QUERY
    WITH input AS (
        SELECT a.run_id, x.attempt_id, x.output
          FROM jsonb_to_recordset(p_results) AS x(attempt_id text, output jsonb)
          JOIN skiplock.attempts a ON a.id = x.attempt_id
         WHERE a.status = 'EXECUTING'),
    runs_done AS (
        UPDATE skiplock.runs r
           SET status = 'COMPLETED', output = i.output, error = NULL, finished_at = v_now,
               updated_at = v_now, worker_id = NULL
          FROM input i
         WHERE r.id = i.run_id AND r.current_attempt_id = i.attempt_id
           AND r.status = 'EXECUTING'
        RETURNING r.id, r.current_attempt_id, i.output),
    attempts_done AS (
        UPDATE skiplock.attempts a
           SET status = 'COMPLETED', output = d.output, finished_at = v_now
          FROM runs_done d
         WHERE a.id = d.current_attempt_id
        RETURNING a.run_id)
    SELECT ad.run_id FROM attempts_done ad;
END;
$$;

-- fail_attempt: record a failed attempt. p_status is FAILED or TIMED_OUT.
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
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off
AS $$
DECLARE
    v_now    timestamptz := skiplock.now();
    v_run    skiplock.runs;
    v_status skiplock.run_status;
BEGIN
    IF p_status NOT IN ('FAILED', 'TIMED_OUT') THEN
        PERFORM skiplock.invalid(format('an attempt cannot fail with status %s', p_status));
    END IF;
    SELECT r.* INTO v_run FROM skiplock.attempts a JOIN skiplock.runs r ON r.id = a.run_id
     WHERE a.id = p_attempt_id AND r.current_attempt_id = p_attempt_id AND r.status = 'EXECUTING'
       FOR UPDATE OF r;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    v_status := CASE WHEN p_status = 'FAILED' AND p_retry_delay IS NOT NULL
                          AND v_run.attempt_count < v_run.max_attempts
                     THEN 'QUEUED' ELSE p_status END;

    UPDATE skiplock.attempts
       SET status = p_status::text::skiplock.attempt_status, error = p_error, finished_at = v_now
     WHERE id = p_attempt_id;

    UPDATE skiplock.runs r
       SET status = v_status, error = p_error, updated_at = v_now, worker_id = NULL,
           available_at = CASE WHEN v_status = 'QUEUED'
                               THEN v_now + make_interval(secs => greatest(p_retry_delay, 0))
                               ELSE r.available_at END,
           finished_at = CASE WHEN v_status = 'QUEUED' THEN NULL ELSE v_now END
     WHERE r.id = v_run.id;
    IF v_status = 'QUEUED' AND p_retry_delay <= 0 THEN
        PERFORM pg_notify('skiplock_wake', v_run.queue);
    END IF;
    RETURN v_status;
END;
$$;
