-- Purging finished runs: a run, and everything that hangs off it, deleted for good.

-- purge_runs: delete up to p_limit finished runs (final status) that finished before
-- p_before, optionally only of p_statuses (final ones) and p_tasks, with what hangs off
-- them: attempts (trigger runs_delete_attempts), steps and blocking edges (cascades),
-- the waitpoints that were theirs alone once complete (their waits, the RUN waitpoint on
-- them, completed tokens they made), and batch rows once all their runs are gone. A
-- purged parent's children keep running, with parent_id set to NULL.
-- Never deleted: a run some unfinished run still waits on (alone or through its batch),
-- and a run whose idempotency key has a TTL still running (it still dedupes triggers).
-- With p_dry_run, counts every run that would go (no limit) and deletes nothing.
-- Locks: the runs deleted, taken oldest first with SKIP LOCKED (no wait on a run locked
-- elsewhere, so no deadlock with workers); the rows that cascade from them.
-- Returns how many runs were deleted (or would be).
CREATE OR REPLACE FUNCTION skiplock.purge_runs(
    p_before timestamptz, p_statuses skiplock.run_status[] DEFAULT NULL,
    p_tasks text[] DEFAULT NULL, p_limit integer DEFAULT 1000, p_dry_run boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_ids      text[];
    v_batches  text[];
    v_points   text[];
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
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- what goes with them, read before the cascades remove the edges
    v_points := ARRAY(
        SELECT e.waitpoint_id FROM skiplock.run_waitpoints e WHERE e.run_id = ANY (v_ids)
        UNION
        SELECT w.id FROM skiplock.waitpoints w WHERE w.type = 'RUN' AND w.run_id = ANY (v_ids));
    v_batches := ARRAY(
        SELECT DISTINCT r.batch_id FROM skiplock.runs r
         WHERE r.id = ANY (v_ids) AND r.batch_id IS NOT NULL);
    DELETE FROM skiplock.runs r WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DELETE FROM skiplock.waitpoints w
     WHERE w.id = ANY (v_points) AND w.status = 'COMPLETED'
       AND NOT EXISTS (SELECT 1 FROM skiplock.run_waitpoints e WHERE e.waitpoint_id = w.id);
    DELETE FROM skiplock.batches b
     WHERE b.id = ANY (v_batches)
       AND NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.batch_id = b.id);
    RETURN v_count;
END;
$$;

-- purgeable: whether run p_run may be purged by purge_runs' filters and rules (above):
-- one definition for its count and its delete. (Its sub-select keeps the planner from
-- inlining it: a call per row scanned, which a manual purge can afford.)
CREATE OR REPLACE FUNCTION skiplock.purgeable(
    p_run skiplock.runs, p_before timestamptz, p_statuses skiplock.run_status[],
    p_tasks text[], p_now timestamptz)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT skiplock.is_final(p_run.status)
       AND (p_statuses IS NULL OR p_run.status = ANY (p_statuses))
       AND p_run.finished_at < p_before
       AND (p_tasks IS NULL OR p_run.task_identifier = ANY (p_tasks))
       -- a key with a TTL dedupes until it ends; one without lasts as long as its run
       AND NOT coalesce(p_run.idempotency_key IS NOT NULL AND NOT p_run.idempotency_key_released
                        AND p_run.idempotency_key_expires_at > p_now, false)
       AND NOT (p_run.waited_on AND EXISTS (
           SELECT 1 FROM skiplock.waitpoints w
             JOIN skiplock.run_waitpoints e ON e.waitpoint_id = w.id
             JOIN skiplock.runs waiting ON waiting.id = e.run_id
            WHERE ((w.type = 'RUN' AND w.run_id = p_run.id)
                   OR (w.type = 'BATCH' AND w.batch_id = p_run.batch_id))
              AND NOT skiplock.is_final(waiting.status)))
$$;
