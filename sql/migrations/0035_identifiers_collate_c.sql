-- 0035: identifiers compare as bytes (COLLATE "C"). Ids, task identifiers, queue names,
-- keys, versions and worker ids are machine strings: their order only has to be stable,
-- and under the database's default collation (C.UTF-8, en_US.UTF-8, ...) every btree
-- comparison of them went through strcoll. Index insertion is a third of the backend's
-- CPU in the worker's hot path (7 entries a run: runs_pkey, runs_task_idx at each
-- update, runs_slots_idx, runs_purge_idx, attempts_pkey), and the text comparisons a
-- quarter of that. Measured, complete_and_claim over 20,000 runs at 50 a call
-- (PostgreSQL 15, database collation C.UTF-8, 6 alternated pairs): backend CPU a run
-- 55.0 -> 50.0 us, a call 2.99 -> 2.78 ms. A collation with more levels (en_US.UTF-8)
-- costs more than C.UTF-8.
-- What changes for a user: equality is the same for any deterministic collation; ORDER
-- BY of these columns is byte order (uppercase before lowercase), and a LIKE 'prefix%'
-- on them can use their indexes. Human text (messages, errors, hostnames, cron
-- expressions, time zones) keeps the database's collation.
-- Every column that holds an identifier changes together: a comparison of a "C" column
-- with a default-collation column is done in "C", and a default-collation index cannot
-- serve it, so one column left behind would lose its index in joins.
-- Altering a column's collation rebuilds the indexes on it (no table rewrite: same
-- type) under the migrations' ACCESS EXCLUSIVE lock; on a runs table of millions of rows
-- that takes a while. Views cannot outlive a column's type change: they are dropped here
-- (on a fresh database, the view files have not created theirs yet); run_details, which
-- the migrations define, is created again below; list_runs, which returns its rows,
-- goes with it. The ledger then forgets the function, view and trigger files, and
-- migrate() applies them all again.

DROP VIEW IF EXISTS skiplock.run_details, skiplock.table_health, skiplock.metrics,
    skiplock.queue_rate_stats, skiplock.queue_stats, skiplock.worker_status CASCADE;

ALTER TABLE skiplock.runs
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN task_identifier TYPE text COLLATE "C",
    ALTER COLUMN tags TYPE text[] COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C",
    ALTER COLUMN batch_id TYPE text COLLATE "C",
    ALTER COLUMN parent_id TYPE text COLLATE "C",
    ALTER COLUMN root_id TYPE text COLLATE "C",
    ALTER COLUMN queue TYPE text COLLATE "C",
    ALTER COLUMN concurrency_key TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C",
    ALTER COLUMN current_attempt_id TYPE text COLLATE "C",
    ALTER COLUMN worker_id TYPE text COLLATE "C",
    ALTER COLUMN schedule_id TYPE text COLLATE "C",
    ALTER COLUMN rate_limit_key TYPE text COLLATE "C";

ALTER TABLE skiplock.attempts
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN worker_id TYPE text COLLATE "C";

ALTER TABLE skiplock.alerts
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN task_identifier TYPE text COLLATE "C",
    ALTER COLUMN state TYPE text COLLATE "C",
    ALTER COLUMN claimed_by TYPE text COLLATE "C";

ALTER TABLE skiplock.batches
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN task_identifier TYPE text COLLATE "C",
    ALTER COLUMN run_ids TYPE text[] COLLATE "C";

ALTER TABLE skiplock.debounces
    ALTER COLUMN task_identifier TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN mode TYPE text COLLATE "C";

ALTER TABLE skiplock.deployment_tasks
    ALTER COLUMN task_identifier TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C",
    ALTER COLUMN queue TYPE text COLLATE "C";

ALTER TABLE skiplock.deployments
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C",
    ALTER COLUMN worker_id TYPE text COLLATE "C",
    ALTER COLUMN tasks TYPE text[] COLLATE "C";

ALTER TABLE skiplock.queues
    ALTER COLUMN name TYPE text COLLATE "C";

ALTER TABLE skiplock.rate_buckets
    ALTER COLUMN queue TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C";

ALTER TABLE skiplock.run_logs
    ALTER COLUMN run_id TYPE text COLLATE "C";

ALTER TABLE skiplock.run_steps
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN name TYPE text COLLATE "C",
    ALTER COLUMN waitpoint_id TYPE text COLLATE "C";

ALTER TABLE skiplock.run_waitpoints
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN waitpoint_id TYPE text COLLATE "C";

ALTER TABLE skiplock.schedules
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN task_identifier TYPE text COLLATE "C",
    ALTER COLUMN type TYPE text COLLATE "C",
    ALTER COLUMN external_id TYPE text COLLATE "C",
    ALTER COLUMN deduplication_key TYPE text COLLATE "C",
    ALTER COLUMN catch_up TYPE text COLLATE "C",
    ALTER COLUMN declared_version TYPE text COLLATE "C",
    ALTER COLUMN last_run_id TYPE text COLLATE "C";

ALTER TABLE skiplock.subscriptions
    ALTER COLUMN kind TYPE text COLLATE "C",
    ALTER COLUMN key TYPE text COLLATE "C";

ALTER TABLE skiplock.waitpoints
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN run_id TYPE text COLLATE "C",
    ALTER COLUMN batch_id TYPE text COLLATE "C",
    ALTER COLUMN idempotency_key TYPE text COLLATE "C",
    ALTER COLUMN tags TYPE text[] COLLATE "C";

ALTER TABLE skiplock.workers
    ALTER COLUMN id TYPE text COLLATE "C",
    ALTER COLUMN version TYPE text COLLATE "C",
    ALTER COLUMN queues TYPE text[] COLLATE "C",
    ALTER COLUMN tasks TYPE text[] COLLATE "C";

CREATE VIEW skiplock.run_details AS
SELECT r.id, r.task_identifier, r.status, r.payload, r.output, r.error, r.metadata, r.tags,
       r.idempotency_key, r.batch_id, r.parent_id, r.root_id, r.depth, r.queue,
       r.concurrency_key, r.priority, r.version, r.attempt_count,
       r.created_at, r.updated_at, r.started_at, r.finished_at, r.delayed_until, r.ttl,
       r.expired_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'id', a.id, 'number', a.number, 'status', a.status,
                     'started_at', a.started_at, 'finished_at', a.finished_at,
                     'output', a.output, 'error', a.error, 'worker_id', a.worker_id)
                   ORDER BY a.number)
                 FROM skiplock.attempts a WHERE a.run_id = r.id), '[]'::jsonb) AS attempts,
       r.schedule_id
FROM skiplock.runs r;

-- every function, view and trigger file is applied again after the migrations
DELETE FROM skiplock.migrations WHERE kind = 'function';
