-- 0004: per-queue admission with concurrency limits and keys, pausing.
--
-- A "unit" is a (queue, concurrency key) pair: runs without a key share their queue's
-- limit, and each key value gets its own copy of it. The ready index is ordered by unit,
-- then by queue time, so a dequeue can visit the units with ready runs (a skip scan)
-- and take each unit's head in order; a saturated unit is skipped without reading its
-- backlog, so it blocks nobody and the cost stays flat as backlogs grow.

DROP INDEX skiplock.runs_ready_idx;
CREATE INDEX runs_ready_idx ON skiplock.runs (queue, (coalesce(concurrency_key, '')), order_at, id)
    WHERE status = 'QUEUED';

-- The runs holding a slot of their unit: counted at admission under the unit's lock.
CREATE INDEX runs_slots_idx ON skiplock.runs (queue, (coalesce(concurrency_key, '')))
    WHERE status IN ('DEQUEUED', 'EXECUTING');

-- an empty key would share the keyless runs' slots: refuse it
ALTER TABLE skiplock.runs ADD CONSTRAINT runs_concurrency_key_check
    CHECK (length(concurrency_key) BETWEEN 1 AND 256);

INSERT INTO skiplock.queues (name)
SELECT DISTINCT queue FROM skiplock.runs ON CONFLICT (name) DO NOTHING;
