-- 0002: fewer index entries per run transition.
-- Every status change of a run is a non-HOT update (status is in partial-index predicates),
-- so every index on runs whose predicate the new row version satisfies gets a new entry
-- on every transition of every run.
--  * runs_status_idx (status, id) took an entry for all three row versions of a run's
--    life. Listing by status now uses two partial indexes that completed runs, the bulk
--    of the table, never enter: one for runs in progress and one for failures. COMPLETED
--    and CANCELED are listed from the primary key (newest first) with a filter.
--  * the tags GIN index held a placeholder entry for every untagged run version.

DROP INDEX skiplock.runs_status_idx;

CREATE INDEX runs_active_idx ON skiplock.runs (id)
    WHERE status IN ('PENDING_VERSION', 'DELAYED', 'QUEUED', 'DEQUEUED', 'EXECUTING', 'WAITING');

CREATE INDEX runs_failed_idx ON skiplock.runs (id)
    WHERE status IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT', 'EXPIRED');

DROP INDEX skiplock.runs_tags_idx;
CREATE INDEX runs_tags_idx ON skiplock.runs USING gin (tags) WHERE tags <> '{}';

-- gen_id's counter: ids made in one session within one millisecond keep their order
-- (a batch's runs list in item order), which the random part alone did not give.
CREATE SEQUENCE skiplock.id_seq MINVALUE 0 MAXVALUE 65535 CYCLE;
