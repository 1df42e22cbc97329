-- The run page's trace (engine/dashboard/trace.py): what a run did on one time axis. The
-- run, its attempts and its child runs come from their own rows; these read the rest.

-- run_trace: the run's first p_limit durable calls, in position order, with when each
-- started and ended: a step from its start (run_steps.started_at, NULL before migration
-- 0020: then its end) to when its result was recorded; a wait, token, child run or batch
-- from when the run blocked to when its waitpoint completed (NULL: still pending), with
-- what it waited on.
CREATE OR REPLACE FUNCTION skiplock.run_trace(p_run_id text, p_limit integer)
RETURNS TABLE (call_position integer, kind text, name text, started_at timestamptz,
               ended_at timestamptz, waitpoint_id text,
               waitpoint_type skiplock.waitpoint_type,
               waitpoint_status skiplock.waitpoint_status, is_error boolean,
               completes_at timestamptz, timeout_at timestamptz, target_run_id text,
               target_batch_id text)
LANGUAGE sql STABLE AS $$
    SELECT s.position, s.kind, s.name, coalesce(s.started_at, s.created_at),
           CASE WHEN s.waitpoint_id IS NULL THEN s.created_at ELSE w.completed_at END,
           s.waitpoint_id, w.type, w.status, w.is_error, w.completes_at, w.timeout_at,
           w.run_id, w.batch_id
      FROM skiplock.run_steps s LEFT JOIN skiplock.waitpoints w ON w.id = s.waitpoint_id
     WHERE s.run_id = p_run_id
     ORDER BY s.position
     LIMIT p_limit
$$;

-- run_trace_logs: the run's newest p_limit log records (skiplock.run_logs, in the order
-- they were emitted: seq), oldest first; none when that table does not exist. The query is built at run time, so this function
-- is created, and answers, whether or not the run logs' migration is in the schema.
CREATE OR REPLACE FUNCTION skiplock.run_trace_logs(p_run_id text, p_limit integer)
RETURNS TABLE (attempt integer, seq bigint, at timestamptz, level text, logger text,
               message text)
LANGUAGE plpgsql STABLE AS $$
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
$$;
