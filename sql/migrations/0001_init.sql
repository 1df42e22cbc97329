-- 0001_init: the run model's tables, types and indexes.
-- Append-only: never edit this file once released; add 0002_... instead.
-- The migration ledger (skiplock.migrations) is created by the migrator itself.

CREATE TYPE skiplock.run_status AS ENUM (
    'PENDING_VERSION', 'DELAYED', 'QUEUED', 'DEQUEUED', 'EXECUTING', 'WAITING',
    'COMPLETED', 'CANCELED', 'FAILED', 'TIMED_OUT', 'CRASHED', 'SYSTEM_FAILURE', 'EXPIRED'
);

CREATE TYPE skiplock.attempt_status AS ENUM (
    'EXECUTING', 'COMPLETED', 'FAILED', 'CANCELED', 'TIMED_OUT', 'CRASHED'
);

-- Every task id a worker has registered, per version. A task is "deployed" once
-- it has a row here; runs for tasks without one wait in PENDING_VERSION.
CREATE TABLE skiplock.deployments (
    id          text        PRIMARY KEY,
    version     text        NOT NULL,
    worker_id   text,
    tasks       text[]      NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE skiplock.deployment_tasks (
    task_identifier text        NOT NULL,
    version         text        NOT NULL,
    queue           text        NOT NULL,
    max_attempts    integer     NOT NULL CHECK (max_attempts >= 1),
    max_duration    double precision CHECK (max_duration > 0),
    ttl             double precision CHECK (ttl > 0),
    deployed_at     timestamptz NOT NULL,
    -- first registration wins: a restarted old-version worker does not become "latest"
    CONSTRAINT deployment_tasks_pkey PRIMARY KEY (task_identifier, version)
);

CREATE INDEX deployment_tasks_latest_idx
    ON skiplock.deployment_tasks (task_identifier, deployed_at DESC);

CREATE TABLE skiplock.queues (
    name              text        PRIMARY KEY,
    concurrency_limit integer     CHECK (concurrency_limit >= 1),
    paused            boolean     NOT NULL DEFAULT false,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE skiplock.workers (
    id                text        PRIMARY KEY,
    version           text        NOT NULL,
    hostname          text        NOT NULL,
    pid               integer     NOT NULL,
    queues            text[],
    tasks             text[]      NOT NULL,
    concurrency       integer     NOT NULL,
    started_at        timestamptz NOT NULL,
    last_heartbeat_at timestamptz NOT NULL,
    stopped_at        timestamptz
);

CREATE TABLE skiplock.batches (
    id              text        PRIMARY KEY,
    task_identifier text        NOT NULL,
    run_count       integer     NOT NULL,
    created_at      timestamptz NOT NULL
);

CREATE TABLE skiplock.runs (
    id                         text        PRIMARY KEY,
    task_identifier            text        NOT NULL,
    status                     skiplock.run_status NOT NULL,
    payload                    jsonb       NOT NULL,
    output                     jsonb,
    error                      jsonb,
    metadata                   jsonb       NOT NULL DEFAULT '{}',
    tags                       text[]      NOT NULL DEFAULT '{}',
    idempotency_key            text,
    idempotency_key_expires_at timestamptz,
    -- set when the key's TTL has passed and a newer run took the key over
    idempotency_key_released   boolean     NOT NULL DEFAULT false,
    batch_id                   text,
    parent_id                  text        REFERENCES skiplock.runs (id) ON DELETE SET NULL,
    root_id                    text,
    depth                      integer     NOT NULL DEFAULT 0,
    queue                      text        NOT NULL,
    concurrency_key            text,
    priority                   integer     NOT NULL DEFAULT 0,
    -- the version the run is locked to (at first dequeue), or pinned to at trigger
    version                    text,
    version_pinned             boolean     NOT NULL DEFAULT false,
    max_attempts               integer     NOT NULL CHECK (max_attempts >= 1),
    max_duration               double precision CHECK (max_duration > 0),
    attempt_count              integer     NOT NULL DEFAULT 0,
    current_attempt_id         text,
    worker_id                  text,
    -- dequeue order: first enqueue time minus the priority head start; kept across retries
    order_at                   timestamptz NOT NULL,
    -- not dequeued before this (retry backoff)
    available_at               timestamptz NOT NULL,
    created_at                 timestamptz NOT NULL,
    updated_at                 timestamptz NOT NULL,
    started_at                 timestamptz,
    finished_at                timestamptz,
    delayed_until              timestamptz,
    ttl                        double precision CHECK (ttl > 0),
    expired_at                 timestamptz,
    CONSTRAINT runs_payload_size CHECK (pg_column_size(payload) <= 10485760)
);

-- The ready set: partial, so finished runs never slow the dequeue down.
CREATE INDEX runs_ready_idx ON skiplock.runs (order_at, id) WHERE status = 'QUEUED';
CREATE INDEX runs_delayed_idx ON skiplock.runs (delayed_until) WHERE status = 'DELAYED';
CREATE INDEX runs_pending_version_idx ON skiplock.runs (task_identifier) WHERE status = 'PENDING_VERSION';
CREATE INDEX runs_task_idx ON skiplock.runs (task_identifier, id);
CREATE INDEX runs_status_idx ON skiplock.runs (status, id);
CREATE INDEX runs_batch_idx ON skiplock.runs (batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX runs_parent_idx ON skiplock.runs (parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX runs_tags_idx ON skiplock.runs USING gin (tags);
CREATE INDEX runs_worker_idx ON skiplock.runs (worker_id) WHERE worker_id IS NOT NULL;
-- One live run per (task, key): failed final statuses and expired keys leave the index.
CREATE UNIQUE INDEX runs_idempotency_idx ON skiplock.runs (task_identifier, idempotency_key)
    WHERE idempotency_key IS NOT NULL AND NOT idempotency_key_released
      AND status NOT IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT', 'EXPIRED');

CREATE TABLE skiplock.attempts (
    id          text        PRIMARY KEY,
    run_id      text        NOT NULL REFERENCES skiplock.runs (id) ON DELETE CASCADE,
    number      integer     NOT NULL,
    status      skiplock.attempt_status NOT NULL,
    worker_id   text        NOT NULL,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz,
    output      jsonb,
    error       jsonb,
    CONSTRAINT attempts_run_number_key UNIQUE (run_id, number)
);

-- A run with its attempts, as the runs API and psql users read it.
CREATE VIEW skiplock.run_details AS
SELECT r.id, r.task_identifier, r.status, r.payload, r.output, r.error, r.metadata, r.tags,
       r.idempotency_key, r.batch_id, r.parent_id, r.root_id, r.depth, r.queue,
       r.concurrency_key, r.priority, r.version, r.attempt_count,
       r.created_at, r.updated_at, r.started_at, r.finished_at, r.delayed_until, r.ttl,
       r.expired_at,
       coalesce((SELECT jsonb_agg(jsonb_build_object(
                     'id', a.id, 'number', a.number, 'status', a.status,
                     'started_at', a.started_at, 'finished_at', a.finished_at,
                     'output', a.output, 'error', a.error, 'worker_id', a.worker_id)
                   ORDER BY a.number)
                 FROM skiplock.attempts a WHERE a.run_id = r.id), '[]'::jsonb) AS attempts
FROM skiplock.runs r;
