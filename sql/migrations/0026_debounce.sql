-- 0026: debounce. Triggers of a task with the same debounce key within its delay join one
-- run; this table holds, per (task, key), the run they join and its window. Stale rows
-- (their run finished or purged) are replaced by the next trigger with the key.
CREATE TABLE skiplock.debounces (
    task_identifier text        NOT NULL,
    key             text        NOT NULL CHECK (length(key) BETWEEN 1 AND 256),
    run_id          text        NOT NULL,
    mode            text        NOT NULL CHECK (mode IN ('trailing', 'leading')),
    first_at        timestamptz NOT NULL,  -- the trigger that made the run
    until_at        timestamptz NOT NULL,  -- triggers before this join the run
    deadline        timestamptz,           -- first_at + max_delay: never later than this
    triggers        integer     NOT NULL DEFAULT 1,
    PRIMARY KEY (task_identifier, key)
);
CREATE INDEX debounces_run_idx ON skiplock.debounces (run_id);
