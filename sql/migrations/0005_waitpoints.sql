-- 0005: waitpoints and durable execution.
--
-- A waitpoint is a row that completes once: DATETIME (a wait until a time), TOKEN (completed
-- by anyone holding its id, or timed out), RUN (a child run reaching a final status) and
-- BATCH (every run of a batch final). run_waitpoints rows are blocking edges: a run that
-- waits on pending waitpoints is WAITING, holds no slot and no worker, and is queued again
-- (ahead of runs queued after it first was) when its last pending waitpoint completes.
-- run_steps is the durable call log of a run: step results, waits, child triggers by
-- position, replayed on resume and retry.

ALTER TYPE skiplock.attempt_status ADD VALUE IF NOT EXISTS 'SUSPENDED';

CREATE TYPE skiplock.waitpoint_type AS ENUM ('DATETIME', 'TOKEN', 'RUN', 'BATCH');
CREATE TYPE skiplock.waitpoint_status AS ENUM ('PENDING', 'COMPLETED');

CREATE TABLE skiplock.waitpoints (
    id                         text        PRIMARY KEY,
    type                       skiplock.waitpoint_type NOT NULL,
    status                     skiplock.waitpoint_status NOT NULL DEFAULT 'PENDING',
    run_id                     text,       -- RUN: the run waited for
    batch_id                   text,       -- BATCH: the batch waited for
    pending_runs               integer,    -- BATCH: runs of the batch not final yet
    completes_at               timestamptz,  -- DATETIME
    timeout_at                 timestamptz,  -- TOKEN
    output                     jsonb,
    is_error                   boolean     NOT NULL DEFAULT false,
    idempotency_key            text,
    idempotency_key_expires_at timestamptz,
    tags                       text[]      NOT NULL DEFAULT '{}',
    created_at                 timestamptz NOT NULL,
    completed_at               timestamptz
);
CREATE INDEX waitpoints_datetime_due_idx ON skiplock.waitpoints (completes_at)
    WHERE status = 'PENDING' AND type = 'DATETIME';
CREATE INDEX waitpoints_token_timeout_idx ON skiplock.waitpoints (timeout_at)
    WHERE status = 'PENDING' AND type = 'TOKEN' AND timeout_at IS NOT NULL;
CREATE UNIQUE INDEX waitpoints_run_idx ON skiplock.waitpoints (run_id) WHERE type = 'RUN';
CREATE UNIQUE INDEX waitpoints_batch_idx ON skiplock.waitpoints (batch_id) WHERE type = 'BATCH';
CREATE UNIQUE INDEX waitpoints_token_key_idx ON skiplock.waitpoints (idempotency_key)
    WHERE type = 'TOKEN' AND idempotency_key IS NOT NULL;

CREATE TABLE skiplock.run_waitpoints (
    run_id       text        NOT NULL REFERENCES skiplock.runs (id) ON DELETE CASCADE,
    waitpoint_id text        NOT NULL REFERENCES skiplock.waitpoints (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL,
    CONSTRAINT run_waitpoints_pkey PRIMARY KEY (run_id, waitpoint_id)
);
CREATE INDEX run_waitpoints_waitpoint_idx ON skiplock.run_waitpoints (waitpoint_id);

CREATE TABLE skiplock.run_steps (
    run_id       text        NOT NULL REFERENCES skiplock.runs (id) ON DELETE CASCADE,
    position     integer     NOT NULL,
    kind         text        NOT NULL CHECK (kind IN ('step', 'wait', 'token', 'run', 'batch')),
    name         text        NOT NULL,
    output       jsonb,
    waitpoint_id text        REFERENCES skiplock.waitpoints (id),
    created_at   timestamptz NOT NULL,
    CONSTRAINT run_steps_pkey PRIMARY KEY (run_id, position)
);

-- suspended: WAITING with its attempt suspended; the next claim resumes that attempt.
-- waited_on: a RUN or BATCH waitpoint completes when this run reaches a final status.
ALTER TABLE skiplock.runs
    ADD COLUMN suspended boolean NOT NULL DEFAULT false,
    ADD COLUMN waited_on boolean NOT NULL DEFAULT false;
