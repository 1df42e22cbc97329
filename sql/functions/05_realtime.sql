-- Realtime: every function that changes a run (status, metadata, output, or a new run)
-- announces the run ids on channel skiplock_runs in the same transaction, ids only (a
-- payload is at most 8000 bytes; subscribers re-read the rows). One notification per
-- statement set, 200 ids each: a batch of completions costs one NOTIFY, not one per run.
-- Nothing is sent while no session is registered in skiplock.subscribers.
-- Direct UPDATEs of skiplock.runs announce nothing: call skiplock.notify_runs(ids) after.

-- notify_runs: announce changes of the runs p_ids (duplicates are folded at commit).
CREATE OR REPLACE FUNCTION skiplock.notify_runs(p_ids text[]) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    v_from integer := 1;
BEGIN
    IF coalesce(cardinality(p_ids), 0) = 0
       OR NOT EXISTS (SELECT 1 FROM skiplock.subscribers) THEN
        RETURN;
    END IF;
    WHILE v_from <= cardinality(p_ids) LOOP
        PERFORM pg_notify('skiplock_runs', array_to_string(p_ids[v_from:v_from + 199], ','));
        v_from := v_from + 200;
    END LOOP;
END;
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
    DELETE FROM skiplock.subscribers WHERE pid = pg_backend_pid()
$$;

-- subscription_horizon: after subscribe() commits, the first xid no transaction that
-- could have missed the registration has; subscription_settled(h) is true once every
-- transaction before h has ended. A change by a transaction that checked for subscribers
-- just before the registration committed is only visible after that: re-read then.
CREATE OR REPLACE FUNCTION skiplock.subscription_horizon() RETURNS xid8
LANGUAGE sql VOLATILE AS $$ SELECT pg_snapshot_xmax(pg_current_snapshot()) $$;

CREATE OR REPLACE FUNCTION skiplock.subscription_settled(p_horizon xid8) RETURNS boolean
LANGUAGE sql VOLATILE AS $$ SELECT pg_snapshot_xmin(pg_current_snapshot()) >= p_horizon $$;
