-- 0031: a resume reads the run's log once, whatever the number of its durable calls.
-- A replayed batch_trigger_and_wait read its children's rows (one query per call, and
-- rows retention may have purged): a BATCH waitpoint now keeps its runs' results when it
-- completes (skiplock.batch_results), and run_log returns them.
ALTER TABLE skiplock.waitpoints ADD COLUMN results jsonb;

-- run_log returns one more column: CREATE OR REPLACE cannot change a row type
-- (sql/functions/45_waitpoints.sql makes it anew)
DROP FUNCTION IF EXISTS skiplock.run_log(text);

-- the batches completed before this migration, as batch_results would have kept them
UPDATE skiplock.waitpoints w
   SET results = (
       SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'status', r.status,
                                                    'output', r.output, 'error', r.error)
                                 ORDER BY r.id), '[]')
         FROM skiplock.runs r
        WHERE r.id = ANY ((SELECT b.run_ids FROM skiplock.batches b WHERE b.id = w.batch_id)::text[])
          AND r.batch_id = w.batch_id)
 WHERE w.type = 'BATCH' AND w.status = 'COMPLETED';
