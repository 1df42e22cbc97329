-- 0020: when each durable step started, for the run page's trace. A step's row is written
-- once, when the worker records its result: created_at is the step's end. record_step
-- now also takes how long the step function ran (the worker's monotonic clock) and the
-- same INSERT stores started_at = created_at - that: no other write, no other round trip,
-- and no comparison of the worker's wall clock with the database's. NULL in rows of the
-- other kinds (a wait, a child run: they start at created_at) and in steps recorded by an
-- older worker. Adding a NULL column rewrites nothing.
ALTER TABLE skiplock.run_steps ADD COLUMN started_at timestamptz;

-- record_step without the step's duration: replaced by record_step(..., p_seconds) in
-- sql/functions/45_waitpoints.sql (re-applied after this), whose p_seconds defaults to
-- NULL, so a worker of the previous version still records its steps.
DROP FUNCTION IF EXISTS skiplock.record_step(text, integer, text, jsonb);
