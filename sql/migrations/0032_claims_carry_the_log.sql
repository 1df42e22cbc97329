-- 0032: the claim functions return, for an attempt that resumes, the run's durable call
-- log (a new `log` column: run_log's rows as a jsonb array), so that a resumed attempt
-- replays without reading it in a round trip of its own. CREATE OR REPLACE cannot change
-- a return type: these are dropped here, and sql/functions/30_dequeue.sql, applied after
-- the migrations, creates them again.
DROP FUNCTION IF EXISTS skiplock.complete_and_claim(jsonb, text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.claim(text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.begin_attempts(text, text, text[], skiplock.run_status);
