-- 0016: when tick last did each of its slower chores (pruning the registry), so that it
-- does them every few minutes instead of at every call.
CREATE TABLE skiplock.maintenance (
    chore       text        PRIMARY KEY,
    last_run_at timestamptz NOT NULL
);
