-- Realtime: every function that changes a run (status, metadata, output, or a new run)
-- announces the run ids on channel skiplock_runs in the same transaction, ids only (a
-- payload is at most 8000 bytes; subscribers re-read the rows). One notification per
-- statement set, 200 ids each: a batch of completions costs one NOTIFY, not one per run.
-- Only runs that a listening session watches (skiplock.subscriptions: by id, tag or
-- batch, or all runs) are announced; with nobody watching, nothing is sent.
-- Direct UPDATEs of skiplock.runs announce nothing: call skiplock.notify_runs(ids) after.

-- notify_runs: announce changes of those runs of p_ids that someone watches (duplicates
-- are folded at commit).
-- Generic plans: with the ids a parameter, the planner judged a custom plan cheaper at
-- every call and planned the lookup anew each time, 60 us of a 70 us call.
-- OFFSET 0 in the EXISTS: each stays a probe of the index per run. Without it the planner
-- may turn an EXISTS under OR into a hashed subplan, which reads every subscription of the
-- kind at each call: with 10,000 run subscriptions, 5.1 ms a call of 50 ids, against 0.2
-- ms with the probes (bench/realtime_scale.py).
CREATE OR REPLACE FUNCTION skiplock.notify_runs(p_ids text[]) RETURNS void
LANGUAGE plpgsql
SET enable_seqscan = off SET enable_hashjoin = off SET enable_mergejoin = off SET jit = off
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_ids  text[];
    v_from integer := 1;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0
       OR NOT EXISTS (SELECT 1 FROM skiplock.subscriptions) THEN
        RETURN;
    END IF;
    IF EXISTS (SELECT 1 FROM skiplock.subscriptions s WHERE s.kind = 'all') THEN
        v_ids := p_ids;
    ELSE
        v_ids := ARRAY(
            SELECT r.id FROM skiplock.runs r
             WHERE r.id = ANY (p_ids)
               AND (EXISTS (SELECT 1 FROM skiplock.subscriptions s
                             WHERE s.kind = 'run' AND s.key = r.id OFFSET 0)
                    OR (r.batch_id IS NOT NULL
                        AND EXISTS (SELECT 1 FROM skiplock.subscriptions s
                                     WHERE s.kind = 'batch' AND s.key = r.batch_id OFFSET 0))
                    OR (r.tags <> '{}'
                        AND EXISTS (SELECT 1 FROM skiplock.subscriptions s
                                     WHERE s.kind = 'tag' AND s.key = ANY (r.tags)))));
    END IF;
    WHILE v_from <= cardinality(v_ids) LOOP
        PERFORM pg_notify('skiplock_runs', array_to_string(v_ids[v_from:v_from + 199], ','));
        v_from := v_from + 200;
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
