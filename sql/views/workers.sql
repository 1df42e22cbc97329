-- Workers as psql users and the dashboard see them (functions: sql/functions/20_workers.sql).

-- worker_status: every worker with its heartbeat, lease, state and runs in hand.
CREATE OR REPLACE VIEW skiplock.worker_status AS
SELECT w.id, w.version, w.hostname, w.pid, w.queues, w.concurrency, w.started_at,
       w.last_heartbeat_at, skiplock.now() - w.last_heartbeat_at AS heartbeat_age,
       w.lease_expires_at,
       CASE WHEN w.stopped_at IS NOT NULL THEN 'stopped'
            WHEN w.lost_at IS NOT NULL THEN 'lost'
            WHEN w.lease_expires_at < skiplock.now() THEN 'lapsed'
            ELSE 'active' END AS state,
       (SELECT count(*) FROM skiplock.runs r  -- runs_slots_idx: the runs in flight
         WHERE r.status IN ('DEQUEUED', 'EXECUTING') AND r.worker_id = w.id) AS runs_in_hand
  FROM skiplock.workers w;
