-- 0011_fewer_run_index_entries: two indexes on runs that every claim paid for.
-- A claim and a completion are non-HOT updates (status is in index predicates), so each
-- gives the new row version an entry in every index whose predicate it satisfies.
--
--  * runs_batch_idx took an entry for every version of a batched run: three a run, where
--    one (at the insert) is all that finding a batch's runs needs. A batch now records
--    the ids of the runs it created (batches.run_ids, written once by trigger_batch),
--    and its runs are read by primary key.
--  * runs_worker_idx took an entry at every claim. A run has a worker exactly while it is
--    DEQUEUED or EXECUTING, so the runs of a worker are found through runs_slots_idx
--    (every run in flight, a few thousand at most) with a filter on worker_id.
--
-- Measured, a serial claim + complete loop of batched runs (backend CPU, interleaved
-- A/B on PostgreSQL 18, twice each): without the batch index, claim 44.5 -> 38.7 and
-- 42.6 -> 35.8 us a run, completion 32.4 -> 28.7 and 28.7 -> 26.3; without the worker
-- index, claim 38.9 -> 36.6 and 39.7 -> 35.8.

ALTER TABLE skiplock.batches ADD COLUMN run_ids text[] NOT NULL DEFAULT '{}';

UPDATE skiplock.batches b
   SET run_ids = r.ids
  FROM (SELECT batch_id, array_agg(id ORDER BY id) AS ids
          FROM skiplock.runs WHERE batch_id IS NOT NULL GROUP BY batch_id) r
 WHERE r.batch_id = b.id;

DROP INDEX skiplock.runs_batch_idx;
DROP INDEX skiplock.runs_worker_idx;
