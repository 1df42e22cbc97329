-- 0007: realtime. A process with run subscriptions registers its LISTEN session here while
-- it listens on skiplock_runs; run changes are announced only while someone is registered
-- (NOTIFY takes a global lock at commit: no cost where nobody can be listening).
-- Unlogged: after a crash every session is gone, and so is the table's content.
CREATE UNLOGGED TABLE skiplock.subscribers (
    pid        integer PRIMARY KEY,
    since      timestamptz NOT NULL DEFAULT now()
);
