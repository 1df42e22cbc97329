-- 0023: alerts. When a run fails for good (FAILED, CRASHED, SYSTEM_FAILURE, TIMED_OUT),
-- a row is written here in the transaction that fails it (trigger runs_failed_alert,
-- sql/triggers/alerts.sql): an outbox, from which any worker of an engine with alert
-- callbacks or webhooks delivers it at least once (engine/worker/alerts.py), whichever
-- worker the run failed on and whether that one still lives.
-- A row lives as long as its run: delete_runs deletes it with the run.
CREATE TABLE skiplock.alerts (
    -- 'alert_...': what a callback or webhook receiver dedupes a redelivery by
    id              text        PRIMARY KEY,
    run_id          text        NOT NULL,
    task_identifier text        NOT NULL,
    status          skiplock.run_status NOT NULL,  -- the run's final status
    created_at      timestamptz NOT NULL,          -- when the run failed
    state           text        NOT NULL DEFAULT 'PENDING'
                                CHECK (state IN ('PENDING', 'DELIVERED', 'ABANDONED')),
    -- not taken for delivery before this: a retry's backoff, or a delivery's lease
    available_at    timestamptz NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0,  -- deliveries begun
    claimed_by      text,                            -- the worker of the latest one
    -- the callbacks and webhooks that took it, so that a retry skips them
    delivered_to    text[]      NOT NULL DEFAULT '{}',
    last_error      text,
    finished_at     timestamptz  -- when it was delivered or abandoned
);

-- what claim_alerts reads: the pending alerts, due first
CREATE INDEX alerts_pending_idx ON skiplock.alerts (available_at) WHERE state = 'PENDING';
-- delete_runs deletes a run's alerts with it
CREATE INDEX alerts_run_idx ON skiplock.alerts (run_id);
