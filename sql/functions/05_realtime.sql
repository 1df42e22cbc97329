-- Realtime: every function that changes a run (status, metadata, output, or a new run)
-- announces the run ids on channel skiplock_runs in the same transaction, ids only (a
-- payload is at most 8000 bytes; subscribers re-read the rows). One notification per
-- call (more for many ids, each under 8000 bytes): a batch of completions costs one
-- NOTIFY, not one per run. Only runs that a listening session watches (skiplock.subscriptions: by
-- id, tag or batch, or all runs) are announced; with nobody watching, nothing is sent.
-- Direct UPDATEs of skiplock.runs announce nothing: call skiplock.notify_runs(ids) after.
--
-- The payload is a JSON object that groups the ids by what they matched, so that a
-- session reads only the rows of the keys it watches, and none for a notification that
-- concerns only others' keys (every LISTENing session receives every notification):
--   {"run": [ids watched by id], "tag": {"tag": [ids]}, "batch": {"batch_id": [ids]},
--    "ids": [every id]}
-- each member present only if not empty; "ids" (alone) while some session watches all
-- runs: every session checks those ids itself.

-- notify_runs: announce changes of those runs of p_ids that someone watches (duplicates
-- are folded at commit).
-- One query, one GROUP BY: the keys the runs may be watched by (their ids, batches and
-- tags), those watched found in one scan of the subscriptions' index (key = ANY: 35 us
-- for 50 runs, where a probe per run and kind took 200 us), grouped by kind and key. The
-- loop writes the groups into payloads, in pieces of at most 100 ids (36 bytes each,
-- gen_id's) measured as written: under 8000 bytes each, a group cut in pieces repeats
-- its key in each payload it spans, never twice in one. A piece with its key (a tag of
-- 128 characters, escaped: under 800 bytes) is under 5 KB, so any piece fits a payload.
-- Measured against the grouping by windows and three aggregations it replaces, 10,000
-- run subscriptions, 50 ids a call: 411 against 504 us, 500 ids: 2.1 against 2.6 ms.
-- Generic plans: with the ids a parameter, the planner judged a custom plan cheaper at
-- every call and planned the lookup anew each time, 60 us of a 70 us call.
-- enable_seqscan off: the subscriptions are read by their index only, whatever the
-- planner makes of a generic plan's estimates (a seq scan of 10,000 run subscriptions at
-- each call took 5.1 ms for 50 ids).
CREATE OR REPLACE FUNCTION skiplock.notify_runs(p_ids text[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_from    integer := 1;
    v_group   record;
    v_payload text;    -- the payload being written, without its closing brackets
    v_kind    text;    -- its last group's kind and key
    v_key     text;
    v_open    text;    -- the group's member opened: "kind":[ or "kind":{"key":[
    v_piece   integer;
    v_ids     text;    -- a piece's ids, JSON strings separated by commas
    v_add     text;
    v_close   text;    -- what closes the last member: ] or ]}
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0
       OR NOT EXISTS (SELECT 1 FROM skiplock.subscriptions) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM skiplock.subscriptions s WHERE s.kind = 'all') THEN
        WHILE v_from <= cardinality(p_ids) LOOP
            PERFORM pg_notify('skiplock_runs',
                              json_build_object('ids', p_ids[v_from:v_from + 199])::text);
            v_from := v_from + 200;
        END LOOP;
        RETURN;
    END IF;
    FOR v_group IN
        WITH r AS MATERIALIZED (
            SELECT r.id, r.batch_id, r.tags FROM skiplock.runs r WHERE r.id = ANY (p_ids)
        ), k AS MATERIALIZED (  -- every key a run of p_ids may be watched by
            SELECT 'run' AS kind, r.id AS key, r.id FROM r
            UNION ALL
            SELECT 'batch', r.batch_id, r.id FROM r WHERE r.batch_id IS NOT NULL
            UNION ALL
            SELECT 'tag', t.tag, r.id FROM r, unnest(r.tags) AS t(tag)
        ), w AS MATERIALIZED (  -- those watched: one scan of the index for them all
            SELECT DISTINCT s.kind, s.key FROM skiplock.subscriptions s
             WHERE s.kind IN ('run', 'batch', 'tag') AND s.key = ANY (ARRAY(SELECT k.key FROM k))
        )
        SELECT k.kind, CASE WHEN k.kind = 'run' THEN '' ELSE k.key END AS key,
               array_agg(k.id ORDER BY k.id) AS ids
          FROM k JOIN w ON w.kind = k.kind AND w.key = k.key
         GROUP BY 1, 2
         ORDER BY 1, 2
    LOOP
        -- the group, in pieces of at most 100 ids, continues the payload: in the array of
        -- the same key, in the object of the same kind, or as a new member; if that would
        -- reach 8000 bytes, the payload goes and the piece starts the next
        v_open := to_json(v_group.kind)::text || ':'
                  || CASE WHEN v_group.kind = 'run' THEN '['
                          ELSE '{' || to_json(v_group.key)::text || ':[' END;
        FOR v_piece IN 0 .. (cardinality(v_group.ids) - 1) / 100 LOOP
            v_ids := array_to_json(v_group.ids[v_piece * 100 + 1 : v_piece * 100 + 100])::text;
            v_ids := substr(v_ids, 2, length(v_ids) - 2);
            v_add := CASE WHEN v_payload IS NULL THEN '{' || v_open
                          WHEN v_kind <> v_group.kind THEN v_close || ',' || v_open
                          WHEN v_key <> v_group.key
                              THEN '],' || to_json(v_group.key)::text || ':['
                          ELSE ',' END || v_ids;
            IF v_payload IS NOT NULL
               AND octet_length(v_payload) + octet_length(v_add) + 3 > 7999 THEN
                PERFORM pg_notify('skiplock_runs', v_payload || v_close || '}');
                v_add := '{' || v_open || v_ids;
                v_payload := '';
            END IF;
            v_payload := coalesce(v_payload, '') || v_add;
            v_kind := v_group.kind;
            v_key := v_group.key;
            v_close := CASE WHEN v_group.kind = 'run' THEN ']' ELSE ']}' END;
        END LOOP;
    END LOOP;
    IF v_payload IS NOT NULL THEN
        PERFORM pg_notify('skiplock_runs', v_payload || v_close || '}');
    END IF;
END;
$$;

-- wake: tell workers of queue p_queue ('' for any) that work may be ready, on channel
-- skiplock_wake; sent only while some worker that listens (not a polling one, see
-- set_worker_polls) holds a current lease. A NOTIFY costs every
-- committing transaction the cluster-wide notify lock, and wakes every session that
-- LISTENs in the database, on any channel (a realtime subscriber too): measured, one
-- trigger() in four went to that with a subscriber and no workers (bench/realtime.py).
-- A worker that starts meanwhile looks for work once it listens, and polls anyway.
CREATE OR REPLACE FUNCTION skiplock.wake(p_queue text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM skiplock.workers w
                WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND NOT w.polls
                  AND w.lease_expires_at > skiplock.now()) THEN
        PERFORM pg_notify('skiplock_wake', p_queue);
    END IF;
END;
$$;

-- watch / unwatch: what this session's subscriptions watch (kinds[i], keys[i]); the
-- session must be registered with subscribe(). A change by a transaction that looked for
-- watchers before watch() committed is not announced: re-read once it has ended (see
-- subscription_horizon).
CREATE OR REPLACE FUNCTION skiplock.watch(p_kinds text[], p_keys text[]) RETURNS void
LANGUAGE sql AS $$
    INSERT INTO skiplock.subscriptions (kind, key, pid)
    SELECT k, v, pg_backend_pid() FROM unnest(p_kinds, p_keys) AS u(k, v)
    ON CONFLICT DO NOTHING
$$;

CREATE OR REPLACE FUNCTION skiplock.unwatch(p_kinds text[], p_keys text[]) RETURNS void
LANGUAGE sql AS $$
    DELETE FROM skiplock.subscriptions s
     USING unnest(p_kinds, p_keys) AS u(k, v)
     WHERE s.kind = u.k AND s.key = u.v AND s.pid = pg_backend_pid()
$$;

-- subscribe / unsubscribe: register this session as a listener of skiplock_runs (the
-- caller runs LISTEN itself: LISTEN takes effect when its transaction commits).
-- A registration whose session is gone is removed by tick().
CREATE OR REPLACE FUNCTION skiplock.subscribe() RETURNS void
LANGUAGE sql AS $$
    INSERT INTO skiplock.subscribers (pid) VALUES (pg_backend_pid())
    ON CONFLICT (pid) DO UPDATE SET since = now()
$$;

CREATE OR REPLACE FUNCTION skiplock.unsubscribe() RETURNS void
LANGUAGE sql AS $$
    DELETE FROM skiplock.subscriptions WHERE pid = pg_backend_pid();
    DELETE FROM skiplock.subscribers WHERE pid = pg_backend_pid();
$$;

-- subscription_horizon: taken after subscribe() or watch() commits, the first xid no
-- transaction that could have missed the registration has (it wrote the run before it
-- looked for watchers). Once pg_snapshot_xmin(pg_current_snapshot()) reaches it, every
-- such transaction has ended: re-read then, and nothing was missed.
CREATE OR REPLACE FUNCTION skiplock.subscription_horizon() RETURNS xid8
LANGUAGE sql VOLATILE AS $$ SELECT pg_snapshot_xmax(pg_current_snapshot()) $$;
