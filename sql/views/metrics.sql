-- Figures for monitoring (the Prometheus collector: engine/db/metrics.py), in one cheap
-- query. Each count reads a partial index that holds only the runs it counts, never the
-- finished runs, the bulk of the table: runs_ready_idx (QUEUED), runs_slots_idx (DEQUEUED,
-- EXECUTING), the parked runs' indexes (WAITING, DELAYED, PENDING_VERSION). So its cost
-- grows with the runs in progress, not with the table (measured: README, "Metrics").
-- Runs by final status are not here: counting them is a scan of the whole table.

-- metrics: a row per figure, (metric, label, value):
--   queue_depth              per queue (label): its QUEUED runs
--   queue_oldest_age_seconds per queue: how long its first run in queue order has waited
--                            (as skiplock.queue_stats' oldest_queued_age; 0 when empty)
--   queue_running            per queue: its runs holding a slot (DEQUEUED, EXECUTING)
--   runs_waiting, runs_delayed, runs_pending_version: the runs in those statuses
--   workers                  per state (active, lapsed, lost, stopped; skiplock.worker_status)
-- Every queue of skiplock.queues has its rows, zeros included.
CREATE OR REPLACE VIEW skiplock.metrics AS
WITH queued AS MATERIALIZED (
    SELECT r.queue, count(*) AS n, min(r.order_at) AS first_at
      FROM skiplock.runs r
     WHERE r.status = 'QUEUED'
     GROUP BY r.queue
), running AS MATERIALIZED (
    SELECT r.queue, count(*) AS n
      FROM skiplock.runs r
     WHERE r.status IN ('DEQUEUED', 'EXECUTING')
     GROUP BY r.queue
), parked AS MATERIALIZED (
    -- each count from its index alone (no heap: the status is in its predicate), WAITING
    -- as the rest of runs_parked_idx: all three in the statement's one snapshot
    SELECT (SELECT count(*) FROM skiplock.runs r
             WHERE r.status IN ('PENDING_VERSION', 'DELAYED', 'WAITING')) AS parked,
           (SELECT count(*) FROM skiplock.runs r WHERE r.status = 'DELAYED') AS delayed,
           (SELECT count(*) FROM skiplock.runs r WHERE r.status = 'PENDING_VERSION')
               AS pending_version
), queues AS MATERIALIZED (
    SELECT q.name FROM skiplock.queues q
    UNION SELECT queued.queue FROM queued
    UNION SELECT running.queue FROM running
), workers AS MATERIALIZED (
    -- the state as skiplock.worker_status has it (not read from that view: views are
    -- applied in name order, and workers.sql comes after this file; tests/test_metrics.py
    -- checks that both count the same)
    SELECT CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
                WHEN w.lost_at IS NOT NULL THEN 'lost'
                WHEN w.lease_expires_at < skiplock.now() THEN 'lapsed'
                ELSE 'active' END AS state,
           count(*) AS n
      FROM skiplock.workers w
     GROUP BY 1
)
SELECT 'queue_depth' AS metric, q.name AS label, coalesce(d.n, 0)::float8 AS value
  FROM queues q LEFT JOIN queued d ON d.queue = q.name
UNION ALL
SELECT 'queue_oldest_age_seconds', q.name,
       coalesce(greatest(extract(epoch FROM skiplock.now() - d.first_at), 0), 0)::float8
  FROM queues q LEFT JOIN queued d ON d.queue = q.name
UNION ALL
SELECT 'queue_running', q.name, coalesce(s.n, 0)::float8
  FROM queues q LEFT JOIN running s ON s.queue = q.name
UNION ALL
SELECT f.metric, NULL, f.value::float8
  FROM parked p
 CROSS JOIN LATERAL (VALUES ('runs_waiting', p.parked - p.delayed - p.pending_version),
                            ('runs_delayed', p.delayed),
                            ('runs_pending_version', p.pending_version)) f(metric, value)
UNION ALL
SELECT 'workers', s.state, coalesce(w.n, 0)::float8
  FROM unnest('{active,lapsed,lost,stopped}'::text[]) s(state)
  LEFT JOIN workers w ON w.state = s.state;
