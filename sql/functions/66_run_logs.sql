-- Run logs: the `logging` records a run emitted, stored per run in skiplock.run_logs,
-- bounded per run, announced to whoever follows them, read by seq.

-- append_run_logs: store a worker's batch of records, p_batch a JSON array with an
-- element per run and attempt: {"run_id": id, "dropped": n, "records": [[attempt, age,
-- level, logger, message, exception], ...]}, records oldest first; age: seconds between
-- the record and the batch's sending (the time stored is the database's, never the
-- worker's: skiplock.now() less the age); `dropped`: records the worker dropped before
-- sending (older than those sent), its own buffer being full. A run twice in a batch
-- (two attempts) gets its records in the batch's order.
-- Bounds, per run: 1,000 records and 256 KB of message and exception text, a marker
-- included. Past either, the oldest records are deleted and one marker record (logger
-- 'skiplock', level WARNING, column dropped) stands before the oldest kept, saying how
-- many were dropped in all.
-- Set-based: a few statements a batch, whatever its runs (a loop only over the runs past
-- a bound). Committed asynchronously (synchronous_commit off for its transaction): no WAL
-- flush of its own, and none lost that matters: the worker records an attempt's outcome
-- after its last records, and that commit flushes the WAL up to it, these included.
-- Records of a run that no longer exists are not stored. The runs written are locked
-- FOR KEY SHARE (as a foreign key's check would: a purge waits for the append, or
-- skips the run) and each under an advisory lock of its own (one appender at a time, so
-- seq follows commit order: a reader reading after a seq misses nothing), in id order, so
-- two appends never deadlock.
-- Whoever watches the runs written (kind 'logs') gets one notification, ids only.
-- Returns how many records were stored.
-- (No SET clause on it: one would undo the set_config below as the function returns.)
CREATE OR REPLACE FUNCTION skiplock.append_run_logs(p_batch jsonb)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    c_max_records CONSTANT bigint := 1000;
    c_max_bytes   CONSTANT bigint := 262144;
    c_marker      CONSTANT bigint := 200;     -- bytes kept free for the marker
    v_now      timestamptz := skiplock.now();
    v_runs     text[];
    v_stored   integer;
    v_run      record;    -- a run past a bound
    v_keep     bigint;    -- its oldest record to keep
    v_gone     bigint;
    v_marker   text;
BEGIN
    v_runs := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.id IN (SELECT b.item->>'run_id' FROM jsonb_array_elements(p_batch) AS b(item))
         ORDER BY r.id
           FOR KEY SHARE);
    IF cardinality(v_runs) = 0 THEN
        RETURN 0;  -- purged (or never were): nothing to keep them for
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('skiplock.run_logs'), hashtext(u.id))
       FROM unnest(v_runs) AS u(id);
    PERFORM set_config('synchronous_commit', 'off', true);
    WITH incoming AS (
        SELECT b.item->>'run_id' AS run_id, b.n, e.k, e.r,
               octet_length(e.r->>4) + coalesce(octet_length(e.r->>5), 0) AS size
          FROM jsonb_array_elements(p_batch) WITH ORDINALITY AS b(item, n)
         CROSS JOIN LATERAL jsonb_array_elements(coalesce(b.item->'records', '[]'))
               WITH ORDINALITY AS e(r, k)
         WHERE b.item->>'run_id' = ANY (v_runs)
    ), numbered AS (
        SELECT i.run_id, i.r, row_number() OVER w AS pos,
               coalesce(sum(i.size) OVER (w ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING),
                        0) AS before
          FROM incoming i
        WINDOW w AS (PARTITION BY i.run_id ORDER BY i.n, i.k)
    ), newest AS (  -- each run's newest record so far: its seq, and the bytes through it
        SELECT u.id, coalesce(l.seq, 0) AS seq, coalesce(l.through, 0) AS through
          FROM unnest(v_runs) AS u(id)
          LEFT JOIN LATERAL (
              SELECT x.seq, x.bytes_before + octet_length(x.message)
                            + coalesce(octet_length(x.exception), 0) AS through
                FROM skiplock.run_logs x WHERE x.run_id = u.id
               ORDER BY x.seq DESC LIMIT 1) l ON true
    )
    INSERT INTO skiplock.run_logs
        (run_id, seq, attempt, at, level, logger, message, exception, bytes_before)
    SELECT n.run_id, w.seq + n.pos, (n.r->>0)::integer,
           v_now - greatest((n.r->>1)::float8, 0) * interval '1 second',
           n.r->>2, n.r->>3, n.r->>4, n.r->>5, w.through + n.before
      FROM numbered n JOIN newest w ON w.id = n.run_id;
    GET DIAGNOSTICS v_stored = ROW_COUNT;
    -- the runs past a bound, or with records the worker dropped: trim them
    FOR v_run IN
        SELECT u.id, f.seq AS first_seq, f.dropped AS first_dropped, l.seq AS last_seq,
               l.through AS total, coalesce(d.dropped, 0) AS dropped
          FROM unnest(v_runs) AS u(id)
          CROSS JOIN LATERAL (
              SELECT x.seq, x.bytes_before, x.dropped FROM skiplock.run_logs x
               WHERE x.run_id = u.id ORDER BY x.seq LIMIT 1) f
          CROSS JOIN LATERAL (
              SELECT x.seq, x.bytes_before + octet_length(x.message)
                            + coalesce(octet_length(x.exception), 0) AS through
                FROM skiplock.run_logs x WHERE x.run_id = u.id
               ORDER BY x.seq DESC LIMIT 1) l
          LEFT JOIN (
              SELECT b.item->>'run_id' AS id, sum((b.item->>'dropped')::bigint) AS dropped
                FROM jsonb_array_elements(p_batch) AS b(item)
               GROUP BY 1) d ON d.id = u.id
         WHERE coalesce(d.dropped, 0) > 0
            OR l.seq - f.seq + 1 > c_max_records
            OR l.through - f.bytes_before > c_max_bytes
    LOOP
        -- keep the newest records that fit beside a marker
        SELECT min(x.seq) INTO v_keep
          FROM skiplock.run_logs x
         WHERE x.run_id = v_run.id AND x.dropped IS NULL
           AND x.bytes_before >= v_run.total - (c_max_bytes - c_marker);
        v_keep := greatest(coalesce(v_keep, v_run.last_seq), v_run.last_seq - c_max_records + 2,
                           v_run.first_seq + (v_run.first_dropped IS NOT NULL)::integer);
        WITH gone AS (
            DELETE FROM skiplock.run_logs x
             WHERE x.run_id = v_run.id AND x.seq < v_keep
            RETURNING coalesce(x.dropped, 1) AS n
        )
        SELECT coalesce(sum(g.n), 0) + v_run.dropped INTO v_gone FROM gone g;
        v_marker := format('%s earlier log %s dropped: a run keeps its last %s records and %s KB',
                           to_char(v_gone, 'FM999,999,999,999'),
                           CASE WHEN v_gone = 1 THEN 'record' ELSE 'records' END,
                           to_char(c_max_records, 'FM999,999'), c_max_bytes / 1024);
        INSERT INTO skiplock.run_logs
            (run_id, seq, attempt, at, level, logger, message, exception, dropped, bytes_before)
        SELECT v_run.id, v_keep - 1, x.attempt, x.at, 'WARNING', 'skiplock', v_marker,
               NULL, v_gone, x.bytes_before - octet_length(v_marker)
          FROM skiplock.run_logs x
         WHERE x.run_id = v_run.id AND x.seq = v_keep;
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
