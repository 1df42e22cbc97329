-- 0021: a run's trace context. With `skiplock[otel]` and a TracerProvider set, trigger()
-- is given the W3C carrier of the trigger's span ({"traceparent": ..., "tracestate": ...})
-- as its `trace_context` option and keeps it here, so the run's attempt spans (and its
-- child runs') join the trace that triggered it. NULL when the trigger was not traced:
-- no bytes on the common path.
ALTER TABLE skiplock.runs ADD COLUMN trace_context jsonb;

-- The claim functions return each run's queue and trace context too (new columns, for
-- the attempt's span; a worker that does not trace does not select them). CREATE OR
-- REPLACE cannot change a return type: these are dropped here, and
-- sql/functions/30_dequeue.sql, applied after the migrations, creates them again.
DROP FUNCTION IF EXISTS skiplock.complete_and_claim(jsonb, text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.claim(text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.begin_attempts(text, text, text[], skiplock.run_status);
