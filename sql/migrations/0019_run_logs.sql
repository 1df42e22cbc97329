-- 0019: run logs. The `logging` records a run emitted (ctx.logger's always, any logger's
-- with capture_logs), written by the worker in batches (skiplock.append_run_logs), read
-- by seq (skiplock.run_logs_of), deleted with their run (skiplock.delete_runs).
-- No foreign key to runs: a purge deletes runs by the thousand, and a per-row cascade
-- would cost each deleted run a trigger call (0010 took the attempts' off for speed);
-- delete_runs deletes a run's logs by run id instead, and append_run_logs locks each run
-- it writes for (FOR KEY SHARE, as a foreign key's check would), so no log outlives its run.
CREATE TABLE skiplock.run_logs (
    run_id       text        NOT NULL,
    -- the record's place in its run: 1, 2, ... in the order they were emitted; the drop
    -- marker takes the seq just before the oldest record kept
    seq          bigint      NOT NULL,
    attempt      integer     NOT NULL,
    at           timestamptz NOT NULL,  -- when it was emitted, on the database's clock
    level        text        NOT NULL,  -- logging's level name: DEBUG, INFO, WARNING, ...
    logger       text        NOT NULL,
    message      text        NOT NULL,
    exception    text,                  -- the traceback (and stack) it carried, if any
    -- the marker (logger 'skiplock'): how many older records were dropped (NULL: a record)
    dropped      integer,
    -- the bytes of message and exception of the run's records before this one, dropped
    -- ones included: a run's size is two index probes (newest and oldest record)
    bytes_before bigint      NOT NULL,
    PRIMARY KEY (run_id, seq)
);

-- a listening session may watch a run's logs (kind 'logs', key: the run id): only
-- watched runs' new records are announced, on channel skiplock_logs
ALTER TABLE skiplock.subscriptions DROP CONSTRAINT subscriptions_kind_check;
ALTER TABLE skiplock.subscriptions ADD CONSTRAINT subscriptions_kind_check
    CHECK (kind IN ('run', 'tag', 'batch', 'all', 'logs'));
