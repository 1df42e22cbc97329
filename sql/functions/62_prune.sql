-- Pruning: the registry forgets what no longer matters, so the workers page and the
-- queues list do not grow with every worker ever started and every queue ever named.

-- due: whether `p_chore` last ran more than `p_every` ago; if so, records now as its
-- last run (in the caller's transaction). Locks: the chore's row.
CREATE OR REPLACE FUNCTION skiplock.due(p_chore text, p_every interval)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    INSERT INTO skiplock.maintenance AS m (chore, last_run_at) VALUES (p_chore, v_now)
    ON CONFLICT (chore) DO UPDATE SET last_run_at = v_now
     WHERE m.last_run_at <= v_now - p_every;
    RETURN FOUND;
END;
$$;

-- prune_registry: delete workers stopped or declared lost more than p_keep ago that hold
-- no run, and queues that no deployment declares, that hold no setting (no concurrency
-- limit, rate limit or retention, not paused), that no unfinished run names, and that
-- nobody changed for p_keep (a typo in a trigger's queue option, a task renamed). A later
-- trigger that names a pruned queue creates it again. At most p_batch of each; and up to
-- 100 * p_batch rate keys whose schedule is over a minute past (a full budget, the same as
-- no row: keys no longer used).
-- Locks: the rows deleted (SKIP LOCKED). Returns {"workers": n, "queues": n,
-- "rate_keys": n}.
CREATE OR REPLACE FUNCTION skiplock.prune_registry(
    p_keep interval DEFAULT '1 day', p_batch integer DEFAULT 100)
RETURNS jsonb
LANGUAGE plpgsql AS $$
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
