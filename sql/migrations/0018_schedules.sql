-- 0018: schedules. A schedule triggers a run of its task at every slot of a 5-field cron
-- expression, evaluated in an IANA time zone (skiplock.next_cron_slot). tick() fires the
-- due ones; the run is triggered in the transaction that advances the schedule, and a
-- unique key on (schedule, slot) makes it one run per slot, however many tickers.
CREATE TABLE skiplock.schedules (
    id                text        PRIMARY KEY,
    task_identifier   text        NOT NULL CHECK (length(task_identifier) BETWEEN 1 AND 256),
    cron              text        NOT NULL,
    timezone          text        NOT NULL DEFAULT 'UTC',
    -- DECLARATIVE: declared on a task in code, kept in step with its deployments;
    -- IMPERATIVE: created through the API (schedules.create, create_schedule)
    type              text        NOT NULL CHECK (type IN ('DECLARATIVE', 'IMPERATIVE')),
    external_id       text        CHECK (length(external_id) <= 256),
    deduplication_key text        UNIQUE CHECK (length(deduplication_key) <= 256),
    payload           jsonb,      -- handed to each run as ScheduledPayload.payload
    -- missed slots (every ticker down): 'latest' fires the last one, 'all' every one,
    -- 'none' none (a slot counts as missed once a minute late)
    catch_up          text        NOT NULL DEFAULT 'latest'
                                  CHECK (catch_up IN ('latest', 'all', 'none')),
    active            boolean     NOT NULL DEFAULT true,
    declared_version  text,       -- DECLARATIVE: the deployment version that declared it
    next_slot         timestamptz,  -- the next slot to fire (kept while inactive)
    last_slot         timestamptz,  -- the last slot fired
    last_run_id       text,
    last_error        text,       -- why the last slot could not trigger, if it could not
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);
-- tick(): the due schedules, soonest first; none due is one index probe
CREATE INDEX schedules_due_idx ON skiplock.schedules (next_slot) WHERE active;
CREATE INDEX schedules_task_idx ON skiplock.schedules (task_identifier, id);
CREATE UNIQUE INDEX schedules_declared_idx ON skiplock.schedules (task_identifier)
    WHERE type = 'DECLARATIVE';

-- a scheduled run carries its schedule and slot: one run per (schedule, slot)
ALTER TABLE skiplock.runs ADD COLUMN schedule_id text, ADD COLUMN schedule_slot timestamptz;
CREATE UNIQUE INDEX runs_schedule_slot_idx ON skiplock.runs (schedule_id, schedule_slot)
    WHERE schedule_id IS NOT NULL;

CREATE OR REPLACE VIEW skiplock.run_details AS
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
                 FROM skiplock.attempts a WHERE a.run_id = r.id), '[]'::jsonb) AS attempts,
       r.schedule_id
FROM skiplock.runs r;

-- list_runs gained a schedule filter (p_schedule): 50_runs.sql creates the new one
DROP FUNCTION IF EXISTS skiplock.list_runs(
    skiplock.run_status[], text[], text[], text, timestamptz, timestamptz, text, integer);
