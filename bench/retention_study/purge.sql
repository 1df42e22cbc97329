-- Retention sketch for skiplock (research, not a migration). Applied on top of a migrated
-- database by bench_retention.py. Design:
--   runs.retention_s  seconds a run is kept after it finishes; NULL = keep forever.
--                     Copied onto the run at trigger (engine default < queue < task < call),
--                     so SQL alone (tick, pg_cron) knows when a row may go.
--   skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at)
--                     IMMUTABLE: finished_at + retention, but never before the run's
--                     idempotency key expires. Adding a seconds-only interval to a
--                     timestamptz does not depend on the time zone, hence IMMUTABLE is honest.
--   runs_purge_idx    partial expression index on purge_at for finished runs that have a
--                     retention: purge reads exactly the due rows, oldest first, no filter
--                     rows re-read on every call (keys still live are pushed out in the key).
--   skiplock.purge(p_limit)
--                     deletes at most p_limit due runs (SKIP LOCKED) and what hangs off
--                     them; one short transaction per call.

ALTER TABLE skiplock.runs ADD COLUMN IF NOT EXISTS retention_s double precision;

CREATE OR REPLACE FUNCTION skiplock.purge_at(
    p_finished_at timestamptz, p_retention_s double precision, p_key_expires_at timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(p_finished_at + p_retention_s * interval '1 second', p_key_expires_at)
$$;

-- created by the bench when the variant needs it:
-- CREATE INDEX runs_purge_idx ON skiplock.runs
--     (skiplock.purge_at(finished_at, retention_s, idempotency_key_expires_at))
--     WHERE finished_at IS NOT NULL AND retention_s IS NOT NULL;

CREATE OR REPLACE FUNCTION skiplock.purge(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_sort = off SET jit = off
AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_ids  text[];
    v_wps  text[];
    v_n    integer;
BEGIN
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
               < v_now
           AND r.finished_at IS NOT NULL AND r.retention_s IS NOT NULL
           -- a run some live run waits on (rare: waited_on) stays until its waiters end
           AND (NOT r.waited_on OR NOT EXISTS (
                SELECT 1 FROM skiplock.waitpoints w
                  JOIN skiplock.run_waitpoints e ON e.waitpoint_id = w.id
                  JOIN skiplock.runs p ON p.id = e.run_id
                 WHERE ((w.type = 'RUN' AND w.run_id = r.id)
                        OR (w.type = 'BATCH' AND w.batch_id = r.batch_id))
                   AND NOT skiplock.is_final(p.status)))
         ORDER BY skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED);
    IF cardinality(v_ids) = 0 THEN
        RETURN 0;
    END IF;
    -- the waitpoints these runs waited on, and the RUN waitpoints made for them
    v_wps := ARRAY(SELECT e.waitpoint_id FROM skiplock.run_waitpoints e
                    WHERE e.run_id = ANY (v_ids)
                   UNION
                   SELECT w.id FROM skiplock.waitpoints w
                    WHERE w.type = 'RUN' AND w.run_id = ANY (v_ids));
    -- attempts go by the statement trigger, run_steps and run_waitpoints by cascade
    DELETE FROM skiplock.runs r WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    IF cardinality(v_wps) > 0 THEN
        DELETE FROM skiplock.waitpoints w
         WHERE w.id = ANY (v_wps) AND w.type <> 'TOKEN'
           AND NOT EXISTS (SELECT 1 FROM skiplock.run_waitpoints e WHERE e.waitpoint_id = w.id)
           AND NOT EXISTS (SELECT 1 FROM skiplock.run_steps s WHERE s.waitpoint_id = w.id);
    END IF;
    RETURN v_n;
END;
$$;

-- purge_by_id: the variant without a new index: ids are time-ordered (gen_id), so walk
-- runs_pkey from the start, oldest created first; rows not yet due are skipped (and
-- re-read on every call: the cost this variant risks).
CREATE OR REPLACE FUNCTION skiplock.purge_by_id(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_sort = off SET jit = off
AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_ids  text[];
    v_n    integer;
BEGIN
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
               < v_now
           AND NOT r.waited_on
         ORDER BY r.id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED);
    DELETE FROM skiplock.runs r WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;

-- purge_cursor: purge with a high-water mark. purge deletes in purge_at order, so what lies
-- below the last batch's purge_at is gone, except rows skipped (SKIP LOCKED, waited on):
-- starting the index scan at the mark jumps over the deleted rows' index entries, which
-- stay in runs_purge_idx until vacuum removes them (and a snapshot held open keeps them
-- indefinitely: every call then walks the whole dead prefix). Every 10 minutes a scan
-- starts from the beginning again, to take the rows skipped.
CREATE TABLE IF NOT EXISTS skiplock.purge_state (
    one       boolean PRIMARY KEY DEFAULT true CHECK (one),
    mark      timestamptz NOT NULL DEFAULT '-infinity',
    rescan_at timestamptz NOT NULL DEFAULT '-infinity'
);
INSERT INTO skiplock.purge_state DEFAULT VALUES ON CONFLICT DO NOTHING;

CREATE OR REPLACE FUNCTION skiplock.purge_cursor(p_limit integer DEFAULT 1000)
RETURNS integer
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_sort = off SET jit = off
AS $$
DECLARE
    v_now   timestamptz := skiplock.now();
    v_state skiplock.purge_state;
    v_mark  timestamptz;
    v_ids   text[];
    v_top   timestamptz;
    v_n     integer;
BEGIN
    SELECT * INTO v_state FROM skiplock.purge_state FOR UPDATE;
    v_mark := CASE WHEN v_state.rescan_at <= v_now THEN '-infinity' ELSE v_state.mark END;
    SELECT array_agg(x.id), max(x.at) INTO v_ids, v_top FROM (
        SELECT r.id, skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at) AS at
          FROM skiplock.runs r
         WHERE skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
               >= v_mark
           AND skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
               < v_now
           AND r.finished_at IS NOT NULL AND r.retention_s IS NOT NULL
           AND NOT r.waited_on   -- (the waiter check of purge() goes here unchanged)
         ORDER BY skiplock.purge_at(r.finished_at, r.retention_s, r.idempotency_key_expires_at)
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED) x;
    UPDATE skiplock.purge_state
       SET mark = coalesce(v_top, v_mark),
           rescan_at = CASE WHEN v_mark = '-infinity' THEN v_now + interval '10 minutes'
                            ELSE rescan_at END;
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    DELETE FROM skiplock.runs r WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_n = ROW_COUNT;
    RETURN v_n;
END;
$$;
