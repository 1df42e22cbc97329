-- Realtime: every function that changes a run (status, metadata, output, or a new run)
-- announces the run ids on channel skiplock_runs in the same transaction, ids only (a
-- payload is at most 8000 bytes; subscribers re-read the rows). One notification per
-- statement set, up to about 6500 bytes of ids each: a batch of completions costs one NOTIFY,
-- not one per run. Only runs that a listening session watches (skiplock.subscriptions: by
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
-- Generic plans: with the ids a parameter, the planner judged a custom plan cheaper at
-- every call and planned the lookup anew each time, 60 us of a 70 us call.
-- OFFSET 0 in the EXISTS: each stays a probe of the index per run (per tag). Without it
-- the planner may turn an EXISTS into a hashed subplan, which reads every subscription of
-- the kind at each call: with 10,000 run subscriptions, 5.1 ms a call of 50 ids, against
-- 0.2 ms with the probes (bench/realtime_scale.py).
CREATE OR REPLACE FUNCTION skiplock.notify_runs(p_ids text[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_from    integer := 1;
    v_payload text;
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
    -- each (kind, key, id) matched; its size in the payload (a group's key counted at its
    -- first id); cut into chunks of about 6500 bytes (a group cut in two repeats its key,
    -- a tag of at most 128 characters: under 8000 bytes in all); one JSON object a chunk
    FOR v_payload IN
        WITH r AS MATERIALIZED (
            SELECT r.id, r.batch_id, r.tags FROM skiplock.runs r WHERE r.id = ANY (p_ids)
        ), m AS (
            SELECT 'run' AS kind, '' AS key, r.id FROM r
             WHERE EXISTS (SELECT 1 FROM skiplock.subscriptions s
                            WHERE s.kind = 'run' AND s.key = r.id OFFSET 0)
            UNION ALL
            SELECT 'batch', r.batch_id, r.id FROM r
             WHERE r.batch_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM skiplock.subscriptions s
                            WHERE s.kind = 'batch' AND s.key = r.batch_id OFFSET 0)
            UNION ALL
            SELECT 'tag', t.tag, r.id
              FROM r, unnest(r.tags) AS t(tag)
             WHERE r.tags <> '{}'
               AND EXISTS (SELECT 1 FROM skiplock.subscriptions s
                            WHERE s.kind = 'tag' AND s.key = t.tag OFFSET 0)
        ), b AS (
            SELECT m.kind, m.key, m.id, octet_length(m.id) + 4
                   + CASE WHEN m.kind = 'run' OR row_number() OVER w > 1 THEN 0
                          ELSE octet_length(to_json(m.key)::text) + 8 END AS bytes
              FROM m WINDOW w AS (PARTITION BY m.kind, m.key ORDER BY m.id)
        ), c AS (
            SELECT b.kind, b.key, b.id,
                   sum(b.bytes) OVER (ORDER BY b.kind, b.key, b.id) / 6500 AS chunk
              FROM b
        ), g AS (
            SELECT c.chunk, c.kind, c.key, json_agg(c.id ORDER BY c.id) AS ids
              FROM c GROUP BY c.chunk, c.kind, c.key
        ), k AS (
            SELECT g.chunk, g.kind,
                   CASE WHEN g.kind = 'run' THEN (array_agg(g.ids))[1]
                        ELSE json_object_agg(g.key, g.ids) END AS v
              FROM g GROUP BY g.chunk, g.kind
        )
        SELECT json_object_agg(k.kind, k.v)::text FROM k GROUP BY k.chunk ORDER BY k.chunk
    LOOP
        PERFORM pg_notify('skiplock_runs', v_payload);
    END LOOP;
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
