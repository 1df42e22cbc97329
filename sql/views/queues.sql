-- Queues as psql users and the dashboard see them (functions: sql/functions/55_queues.sql).

-- queue_rate_stats: per rate key of a rate-limited queue (a run's rate_limit_key, else its
-- concurrency key, else ''), the queue's rate, the budget left (how many runs of cost 1
-- may start now) and when the next may start (now, while budget is left). Keys that
-- started no run lately have no row: their whole burst is left.
CREATE OR REPLACE VIEW skiplock.queue_rate_stats AS
SELECT b.queue, b.key, q.rate_limit, q.rate_period_s, q.rate_burst,
       greatest(floor(s.budget + 1e-9), 0)::integer AS budget_left,
       CASE WHEN s.budget >= 1 - 1e-9 THEN skiplock.now()
            ELSE b.tat - make_interval(secs => (q.rate_burst - 1) * s.interval) END
           AS next_allowed_at,
       b.tat
  FROM skiplock.rate_buckets b
  JOIN skiplock.queues q ON q.name = b.queue AND q.rate_limit IS NOT NULL
 CROSS JOIN LATERAL (
       SELECT q.rate_period_s / q.rate_limit AS interval,
              skiplock.rate_budget(b.tat, skiplock.now(), q.rate_period_s / q.rate_limit,
                                   q.rate_burst) AS budget) s;

-- queue_stats: per queue, its limit and pause flag, the runs queued and running (slot
-- holders) and the age of the oldest queued run; its rate limit (rate_limit runs per
-- rate_period_s seconds per rate key, rate_burst at once; NULLs: none), how many of its
-- rate keys are out of budget now and the earliest time one of them may start a run
-- again (per key: queue_rate_stats).
CREATE OR REPLACE VIEW skiplock.queue_stats AS
SELECT q.name, q.concurrency_limit, q.paused,
       (SELECT count(*) FROM skiplock.runs r WHERE r.queue = q.name AND r.status = 'QUEUED')
           AS queued,
       (SELECT count(*) FROM skiplock.runs r
         WHERE r.queue = q.name AND r.status IN ('DEQUEUED', 'EXECUTING')) AS running,
       (SELECT skiplock.now() - min(r.order_at) FROM skiplock.runs r
         WHERE r.queue = q.name AND r.status = 'QUEUED') AS oldest_queued_age,
       q.rate_limit, q.rate_period_s, q.rate_burst,
       coalesce(k.waiting, 0) AS rate_keys_waiting, k.next_allowed_at AS rate_next_allowed_at
  FROM skiplock.queues q
  LEFT JOIN LATERAL (
       SELECT count(*) AS waiting, min(s.next_allowed_at) AS next_allowed_at
         FROM skiplock.queue_rate_stats s
        WHERE s.queue = q.name AND s.budget_left = 0) k ON q.rate_limit IS NOT NULL;
