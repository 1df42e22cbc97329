-- 0033: a blocking edge (run_waitpoints) says whether its waitpoint is still pending, and
-- a partial index holds only those edges: whether a run may resume (resume_if_ready) reads
-- its pending edges, not every edge it ever had. A run of 1,000 past waits or child calls
-- kept 1,000 edges, each probed at every resume (6 ms, and 70 to 100 ms when the planner
-- chose a seq scan). block_run sets the flag from the waitpoint it has locked;
-- complete_waitpoint, the one place a waitpoint completes, clears it on the waitpoint's
-- edges (sql/functions/45_waitpoints.sql, applied after the migrations).
-- ADD COLUMN with a constant default rewrites nothing; the backfill marks the edges of the
-- waitpoints pending now. This runs in the migrations' transaction, which holds the table
-- (ACCESS EXCLUSIVE) until the new functions are in place: no completion can slip between.
ALTER TABLE skiplock.run_waitpoints ADD COLUMN pending boolean NOT NULL DEFAULT false;

UPDATE skiplock.run_waitpoints e SET pending = true
  FROM skiplock.waitpoints w
 WHERE w.id = e.waitpoint_id AND w.status = 'PENDING';

CREATE INDEX run_waitpoints_pending_idx ON skiplock.run_waitpoints (run_id) WHERE pending;
