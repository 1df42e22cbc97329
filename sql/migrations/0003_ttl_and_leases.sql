-- 0003: TTL deadlines and worker leases.

-- When a run that has not started expires: its enqueue time (the end of its delay, if
-- any) plus its ttl. NULL: never.
ALTER TABLE skiplock.runs ADD COLUMN expires_at timestamptz;
CREATE INDEX runs_expiring_idx ON skiplock.runs (expires_at)
    WHERE expires_at IS NOT NULL AND status IN ('PENDING_VERSION', 'DELAYED', 'QUEUED');

-- A worker holds its runs while its lease is current; heartbeats renew it. When it
-- lapses, tick crashes the worker's started runs and requeues the ones it never started.
ALTER TABLE skiplock.workers
    ADD COLUMN lease_seconds double precision NOT NULL DEFAULT 30 CHECK (lease_seconds > 0),
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN lost_at timestamptz;
CREATE INDEX workers_lease_idx ON skiplock.workers (lease_expires_at)
    WHERE stopped_at IS NULL AND lost_at IS NULL;
