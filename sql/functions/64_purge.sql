-- Purging finished runs: a run, and everything that hangs off it, deleted for good.

-- still_awaited: whether some unfinished run waits on run p_run_id, directly or through
-- its batch p_batch_id (a run's waited_on flag says whether to ask: few runs are).
CREATE OR REPLACE FUNCTION skiplock.still_awaited(p_run_id text, p_batch_id text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM skiplock.waitpoints w
          JOIN skiplock.run_waitpoints e ON e.waitpoint_id = w.id
          JOIN skiplock.runs waiting ON waiting.id = e.run_id
         WHERE ((w.type = 'RUN' AND w.run_id = p_run_id)
                OR (w.type = 'BATCH' AND w.batch_id = p_batch_id))
           AND NOT skiplock.is_final(waiting.status))
$$;

-- delete_runs: delete runs p_ids (locked by the caller) with what hangs off them:
-- attempts (trigger runs_delete_attempts), steps and blocking edges (cascades), their
-- logs, the completed waitpoints that were theirs alone (their waits, the RUN waitpoint
-- on them, tokens no other run or step refers to), their alerts (delivered or not), and
-- batch rows once all their runs are gone.
-- A deleted parent's children keep running, with parent_id set to NULL.
-- Returns how many runs were deleted.
CREATE OR REPLACE FUNCTION skiplock.delete_runs(p_ids text[])
RETURNS integer
LANGUAGE plpgsql AS $$
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

-- purge_runs: the manual purge (`skiplock runs purge`), whatever the runs' retention:
-- delete up to p_limit finished runs (final status) that finished before p_before,
-- optionally only of p_statuses (final ones) and p_tasks, with what hangs off them
-- (delete_runs).
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

-- purgeable: whether run p_run may be purged by purge_runs' filters and rules (above):
-- one definition for its count and its delete (a call per row scanned, which a manual
-- purge can afford).
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
       AND NOT (p_run.waited_on AND skiplock.still_awaited(p_run.id, p_run.batch_id))
$$;

-- purge: the retention policy. Deletes up to p_limit finished runs whose retention has
-- run out (skiplock.purge_at: retention_s after finished_at, and never while their
-- idempotency key dedupes), oldest due first, with what hangs off them (delete_runs).
-- Runs some unfinished run still waits on stay until it ends; runs with no retention
-- (retention_s NULL) stay forever. tick() calls it; pg_cron can too (README). Bounded:
-- one short transaction, p_limit runs (500 took at most 57 ms in
-- bench/retention_study); call it again while it returns p_limit.
-- The index scan starts at a high-water mark (maintenance row 'purge'): what lies below
-- it was deleted, but its entries stay in runs_purge_idx until vacuum removes them, and a
-- snapshot held open keeps them there, so every call would walk them again (max 418 ms
-- per call measured, 170 ms with the mark). Runs skipped below the mark (locked, still
-- awaited) are taken by a scan from the start every 10 minutes.
-- Locks: the runs deleted (SKIP LOCKED: never waits for a worker), the rows that go with
-- them; the 'purge' maintenance row (a concurrent purge() returns 0 at once).
-- Returns how many runs were deleted.
CREATE OR REPLACE FUNCTION skiplock.purge(p_limit integer DEFAULT 500)
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_sort = off SET jit = off
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

-- purge_tokens: delete up to p_limit tokens completed more than p_keep ago that no run
-- waits on and no step refers to (tokens a run waited on go with the run, by
-- delete_runs). tick() calls it every 10 minutes with the longest engine default
-- retention of the tasks deployed. Locks: the tokens deleted (SKIP LOCKED).
-- Returns how many were deleted.
CREATE OR REPLACE FUNCTION skiplock.purge_tokens(p_keep interval, p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql AS $$
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

-- token_retention: how long a token no run waits on is kept once completed: the longest
-- engine default retention of the tasks deployed (30 days if none says); NULL: forever.
CREATE OR REPLACE FUNCTION skiplock.token_retention() RETURNS interval
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN max(d.default_retention_s) = 'Infinity' THEN NULL
                ELSE coalesce(max(d.default_retention_s), 2592000) * interval '1 second' END
      FROM skiplock.deployment_tasks d
$$;
