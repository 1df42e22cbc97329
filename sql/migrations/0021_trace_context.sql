-- 0021: a run's trace context. With `skiplock[otel]` and a TracerProvider set, trigger()
-- is given the W3C carrier of the trigger's span ({"traceparent": ..., "tracestate": ...})
-- as its `trace_context` option and keeps it here, so the run's attempt spans (and its
-- child runs') join the trace that triggered it. NULL when the trigger was not traced:
-- no bytes on the common path. Read by the worker only while it traces (one query per
-- claimed batch); nothing in SQL reads it.
ALTER TABLE skiplock.runs ADD COLUMN trace_context jsonb;
