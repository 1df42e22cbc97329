-- 0009_run_values: the values a run takes from its trigger options (see
-- skiplock.run_options in sql/functions/10_trigger.sql), as one composite type, so that a
-- batch computes them once for the options its items share.
CREATE TYPE skiplock.run_values AS (
    problem         text,              -- what is wrong with the options, or NULL
    delay           timestamptz,       -- delayed until (NULL: not delayed)
    start_at        timestamptz,       -- enqueued at: now, or the end of the delay
    tags            text[],
    priority        integer,
    ttl             double precision,
    queue           text,
    concurrency_key text,
    max_attempts    integer,
    max_duration    double precision,
    metadata        jsonb
);
