-- 0017: retention. A finished run is kept retention_s seconds after it finishes, then
-- skiplock.purge() deletes it with what hangs off it; NULL keeps it forever (and is what
-- runs from before this migration have: `skiplock runs purge` clears those by hand).
-- The value is resolved when the run is triggered (see skiplock.run_options), from the
-- trigger, the task, its queue, then the engine default, so SQL alone (tick, pg_cron)
-- knows when a row may go. In the settings columns below NULL means "not declared" and
-- 'Infinity' means "keep forever".
ALTER TABLE skiplock.runs ADD COLUMN retention_s double precision
    CHECK (retention_s > 0 AND retention_s < 'Infinity');
ALTER TYPE skiplock.run_values ADD ATTRIBUTE retention double precision;
ALTER TABLE skiplock.deployment_tasks
    ADD COLUMN task_retention_s double precision CHECK (task_retention_s > 0),
    ADD COLUMN queue_retention_s double precision CHECK (queue_retention_s > 0),
    ADD COLUMN default_retention_s double precision CHECK (default_retention_s > 0);
ALTER TABLE skiplock.queues ADD COLUMN retention_s double precision CHECK (retention_s > 0);

-- when a finished run may be purged: retention_s after it finished, and never while its
-- idempotency key still dedupes triggers. IMMUTABLE (a seconds-only interval added to a
-- timestamptz does not depend on the time zone), so an index can hold it.
CREATE FUNCTION skiplock.purge_at(
    p_finished_at timestamptz, p_retention_s double precision, p_key_expires_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(p_finished_at + p_retention_s * interval '1 second', p_key_expires_at)
$$;

-- purge() reads exactly the due runs, oldest due first. Measured in
-- bench/retention_study: +10 us per run on the claim and completion path; ordering by id
-- instead (no index) took up to 1.6 s per call.
CREATE INDEX runs_purge_idx ON skiplock.runs
    (skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at))
    WHERE finished_at IS NOT NULL AND retention_s IS NOT NULL;

-- where purge() got to in runs_purge_idx (see skiplock.purge)
ALTER TABLE skiplock.maintenance ADD COLUMN mark timestamptz;
-- there from the start: a purge() that finds it locked returns at once (an INSERT of it
-- would wait for the other purge's transaction)
INSERT INTO skiplock.maintenance (chore, last_run_at, mark) VALUES ('purge', '-infinity', '-infinity');

-- Vacuum hygiene for the tables every run churns (bench/retention_study: with these and
-- autovacuum_naptime = 10 s, a saturated drain ran 1.57x faster, dead tuples 3.6x fewer).
-- The defaults (20% of a table dead before a vacuum) let a queue table fill with dead
-- rows that every claim walks over; vacuum work is cheap next to that (no cost delay).
ALTER TABLE skiplock.runs SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE skiplock.attempts SET (
    autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE skiplock.waitpoints SET (
    autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0);
ALTER TABLE skiplock.run_waitpoints SET (
    autovacuum_vacuum_scale_factor = 0.05, autovacuum_analyze_scale_factor = 0.05,
    autovacuum_vacuum_cost_delay = 0);

-- A waitpoint goes once no run and no step refers to it: finding the steps that refer to
-- one (and the foreign key's check on its delete) must not scan run_steps.
CREATE INDEX run_steps_waitpoint_idx ON skiplock.run_steps (waitpoint_id)
    WHERE waitpoint_id IS NOT NULL;
-- tokens no run waits on any more, oldest completed first (skiplock.purge_tokens)
CREATE INDEX waitpoints_completed_token_idx ON skiplock.waitpoints (completed_at)
    WHERE type = 'TOKEN' AND status = 'COMPLETED';
