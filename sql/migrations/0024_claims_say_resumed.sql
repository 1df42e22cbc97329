-- 0024: the claim functions return whether each attempt resumes after a wait (a new
-- `resumed` column), for the worker's on_start and on_resume hooks. CREATE OR REPLACE
-- cannot change a return type: these are dropped here, and sql/functions/30_dequeue.sql,
-- applied after the migrations, creates them again.
DROP FUNCTION IF EXISTS skiplock.complete_and_claim(jsonb, text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.claim(text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.begin_attempts(text, text, text[], skiplock.run_status);
