-- The runs API: list, cancel, replay, reschedule. Callable from any SQL client.

-- list_runs: one page of runs, newest first, with their attempts.
-- Filters are ANDed; NULL means no filter. Tags match runs having any of p_tags.
-- p_after is the cursor: the id of the last run of the previous page.
-- Raises SL003 when a task filter names a task no deployment and no run knows.
-- Planned for the filters of each call (custom plans): those given pick the index, such
-- as the primary key for a batch's runs (batches.run_ids) or runs_task_idx for a task's.
CREATE OR REPLACE FUNCTION skiplock.list_runs(
    p_status skiplock.run_status[] DEFAULT NULL, p_tasks text[] DEFAULT NULL,
    p_tags text[] DEFAULT NULL, p_batch text DEFAULT NULL,
    p_created_from timestamptz DEFAULT NULL, p_created_to timestamptz DEFAULT NULL,
    p_after text DEFAULT NULL, p_limit integer DEFAULT 20, p_schedule text DEFAULT NULL)
RETURNS SETOF skiplock.run_details
LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_custom_plan SET jit = off  -- see lock_ready
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

-- cancel_run: cancel a run and every non-final descendant. A running attempt is
-- marked CANCELED (fencing its late result) and its worker is notified on
-- 'skiplock_cancel' to stop it. Canceling a run in a final status changes nothing.
-- Locks: the run rows, root first then descendants by depth (one order for all callers).
-- Returns the run's status after the call. SL001 for an unknown id.
CREATE OR REPLACE FUNCTION skiplock.cancel_run(p_run_id text)
RETURNS skiplock.run_status
LANGUAGE plpgsql AS $$
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

-- replay_run: a new run of the same task with the same payload, tags, metadata, queue
-- and limits (concurrency and rate keys, rate cost), on the latest deployed version
-- (never pinned). SL001 for an unknown id. Returns the new run's id.
CREATE OR REPLACE FUNCTION skiplock.replay_run(p_run_id text)
RETURNS text
LANGUAGE plpgsql AS $$
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

-- reschedule_run: move a DELAYED run's start to p_delay_until. SL002 when the run is
-- not DELAYED, SL001 when it does not exist.
-- Locks: the run row. Returns the new delayed_until.
CREATE OR REPLACE FUNCTION skiplock.reschedule_run(p_run_id text, p_delay_until timestamptz)
RETURNS timestamptz
LANGUAGE plpgsql AS $$
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
