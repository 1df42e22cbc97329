-- Queues as psql users and the dashboard see them (functions: sql/functions/55_queues.sql).

-- queue_stats: per queue, its limit and pause flag, the runs queued and running (slot
-- holders) and the age of the oldest queued run.
CREATE OR REPLACE VIEW skiplock.queue_stats AS
SELECT q.name, q.concurrency_limit, q.paused,
       (SELECT count(*) FROM skiplock.runs r WHERE r.queue = q.name AND r.status = 'QUEUED')
           AS queued,
       (SELECT count(*) FROM skiplock.runs r
         WHERE r.queue = q.name AND r.status IN ('DEQUEUED', 'EXECUTING')) AS running,
       (SELECT skiplock.now() - min(r.order_at) FROM skiplock.runs r
         WHERE r.queue = q.name AND r.status = 'QUEUED') AS oldest_queued_age
  FROM skiplock.queues q;
