-- Run logs: the `logging` records a run emitted, stored per run in skiplock.run_logs,
-- bounded per run, announced to whoever follows them, read by seq.

-- append_run_logs: store a worker's batch of records, p_batch a JSON array with an
-- element per run: {"run_id": id, "dropped": n, "records": [[attempt, age, level,
-- logger, message, exception], ...]}, records oldest first; age: seconds between the
-- record and the batch's sending (the time stored is the database's, never the
-- worker's: skiplock.now() less the age); `dropped`: records the worker dropped before
-- sending (older than those sent), its own buffer being full.
-- Bounds, per run: 1,000 records and 256 KB of message and exception text, a marker
-- included. Past either, the oldest records are deleted and one marker record (logger
-- 'skiplock', level WARNING, column dropped) stands before the oldest kept, saying how
-- many were dropped in all.
-- Records of a run that no longer exists are not stored. Each run written is locked
-- FOR KEY SHARE (as a foreign key's check would: a purge waits for the append, or
-- skips the run) and under an advisory lock of its own (one appender at a time, so seq
-- follows commit order: a reader reading after a seq misses nothing). Runs are taken in
-- id order, so two appends never deadlock; a run twice in a batch (two attempts), in the
-- batch's order.
-- Whoever watches the runs written (kind 'logs') gets one notification, ids only.
-- Returns how many records were stored.
CREATE OR REPLACE FUNCTION skiplock.append_run_logs(p_batch jsonb)
RETURNS integer
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    c_max_records CONSTANT bigint := 1000;
    c_max_bytes   CONSTANT bigint := 262144;
    c_marker      CONSTANT bigint := 200;     -- bytes kept free for the marker
    v_now      timestamptz := skiplock.now();
    v_item     record;
    v_last     bigint;    -- the newest seq, before and after the insert
    v_total    bigint;    -- bytes of every record so far, dropped ones included
    v_added    integer;
    v_stored   integer := 0;
    v_first    record;    -- the oldest row kept (record or marker)
    v_keep     bigint;    -- the oldest record to keep
    v_gone     bigint;
    v_marker   text;
    v_runs     text[] := '{}';
BEGIN
    FOR v_item IN
        SELECT e.item->>'run_id' AS run_id, coalesce((e.item->>'dropped')::integer, 0) AS dropped,
               e.item->'records' AS records
          FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS e(item, n)
         WHERE e.item->>'run_id' IS NOT NULL
         ORDER BY 1, e.n
    LOOP
        PERFORM 1 FROM skiplock.runs r WHERE r.id = v_item.run_id FOR KEY SHARE;
        CONTINUE WHEN NOT FOUND;  -- purged (or never was): nothing to keep it for
        PERFORM pg_advisory_xact_lock(hashtext('skiplock.run_logs'), hashtext(v_item.run_id));
        SELECT l.seq, l.bytes_before + octet_length(l.message)
                      + coalesce(octet_length(l.exception), 0)
          INTO v_last, v_total
          FROM skiplock.run_logs l WHERE l.run_id = v_item.run_id
         ORDER BY l.seq DESC LIMIT 1;
        v_last := coalesce(v_last, 0);
        v_total := coalesce(v_total, 0);
        WITH incoming AS (
            SELECT e.n, e.r, octet_length(e.r->>4) + coalesce(octet_length(e.r->>5), 0) AS size
              FROM jsonb_array_elements(coalesce(v_item.records, '[]')) WITH ORDINALITY AS e(r, n)
        ), stored AS (
            INSERT INTO skiplock.run_logs
                (run_id, seq, attempt, at, level, logger, message, exception, bytes_before)
            SELECT v_item.run_id, v_last + i.n, (i.r->>0)::integer,
                   v_now - greatest((i.r->>1)::float8, 0) * interval '1 second',
                   i.r->>2, i.r->>3, i.r->>4, i.r->>5,
                   v_total + coalesce(sum(i.size) OVER (ORDER BY i.n ROWS BETWEEN UNBOUNDED
                                                        PRECEDING AND 1 PRECEDING), 0)
              FROM incoming i
            RETURNING seq, bytes_before + octet_length(message)
                           + coalesce(octet_length(exception), 0) AS bytes_after
        )
        SELECT count(*), coalesce(max(s.seq), v_last), coalesce(max(s.bytes_after), v_total)
          INTO v_added, v_last, v_total
          FROM stored s;
        v_stored := v_stored + v_added;
        IF v_added > 0 OR v_item.dropped > 0 THEN
            v_runs := v_runs || v_item.run_id;
        END IF;
        CONTINUE WHEN v_last = 0;  -- nothing stored, ever
        SELECT l.seq, l.bytes_before, l.dropped INTO v_first
          FROM skiplock.run_logs l WHERE l.run_id = v_item.run_id
         ORDER BY l.seq LIMIT 1;
        CONTINUE WHEN v_item.dropped = 0
                  AND v_last - v_first.seq + 1 <= c_max_records
                  AND v_total - v_first.bytes_before <= c_max_bytes;
        -- over a bound: keep the newest records that fit beside a marker
        SELECT min(l.seq) INTO v_keep
          FROM skiplock.run_logs l
         WHERE l.run_id = v_item.run_id AND l.dropped IS NULL
           AND l.bytes_before >= v_total - (c_max_bytes - c_marker);
        v_keep := greatest(coalesce(v_keep, v_last), v_last - c_max_records + 2,
                           v_first.seq + (v_first.dropped IS NOT NULL)::integer);
        WITH gone AS (
            DELETE FROM skiplock.run_logs l
             WHERE l.run_id = v_item.run_id AND l.seq < v_keep
            RETURNING coalesce(l.dropped, 1) AS n
        )
        SELECT coalesce(sum(g.n), 0) + v_item.dropped INTO v_gone FROM gone g;
        v_marker := format('%s earlier log %s dropped: a run keeps its last %s records and %s KB',
                           to_char(v_gone, 'FM999,999,999,999'),
                           CASE WHEN v_gone = 1 THEN 'record' ELSE 'records' END,
                           to_char(c_max_records, 'FM999,999'), c_max_bytes / 1024);
        INSERT INTO skiplock.run_logs
            (run_id, seq, attempt, at, level, logger, message, exception, dropped, bytes_before)
        SELECT v_item.run_id, v_keep - 1, l.attempt, l.at, 'WARNING', 'skiplock', v_marker,
               NULL, v_gone, l.bytes_before - octet_length(v_marker)
          FROM skiplock.run_logs l
         WHERE l.run_id = v_item.run_id AND l.seq = v_keep;
    END LOOP;
    PERFORM skiplock.notify_run_logs(v_runs);
    RETURN v_stored;
END;
$$;

-- notify_run_logs: announce new records of those runs of p_ids that a listening session
-- watches (kind 'logs'), on channel skiplock_logs, ids only, 200 a notification. With
-- nobody watching, nothing is sent (a NOTIFY costs every commit the notify lock).
CREATE OR REPLACE FUNCTION skiplock.notify_run_logs(p_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_ids  text[];
    v_from integer := 1;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    v_ids := ARRAY(SELECT DISTINCT s.key FROM skiplock.subscriptions s
                    WHERE s.kind = 'logs' AND s.key = ANY (p_ids));
    WHILE v_from <= cardinality(v_ids) LOOP
        PERFORM pg_notify('skiplock_logs', array_to_string(v_ids[v_from:v_from + 199], ','));
        v_from := v_from + 200;
    END LOOP;
END;
$$;

-- run_logs_of: run p_run_id's records after seq p_after (NULL: from the first), oldest
-- first, at most p_limit (1 to 10,000). Raises SL001 when the run does not exist.
CREATE OR REPLACE FUNCTION skiplock.run_logs_of(
    p_run_id text, p_after bigint DEFAULT NULL, p_limit integer DEFAULT 1000)
RETURNS TABLE (run_id text, attempt integer, seq bigint, at timestamptz, level text,
               logger text, message text, exception text, dropped integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_limit IS NULL OR p_limit NOT BETWEEN 1 AND 10000 THEN
        PERFORM skiplock.invalid(format('limit must be 1 to 10000, got %s', p_limit));
    END IF;
    RETURN QUERY
        SELECT l.run_id, l.attempt, l.seq, l.at, l.level, l.logger, l.message, l.exception,
               l.dropped
          FROM skiplock.run_logs l
         WHERE l.run_id = p_run_id AND l.seq > coalesce(p_after, -1)
         ORDER BY l.seq
         LIMIT p_limit;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.id = p_run_id) THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001', MESSAGE = format('run %s does not exist', p_run_id);
    END IF;
END;
$$;
