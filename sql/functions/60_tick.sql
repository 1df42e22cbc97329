-- Maintenance: every time-based transition, in bounded batches.

-- wake_due: what must happen at its time, not at the next tick: complete due DATETIME
-- waitpoints and time out due tokens (resuming their runs), and promote due DELAYED runs
-- to QUEUED (not those whose TTL passed too: tick expires them). At most p_batch of each
-- kind; rows another caller holds are skipped, so any number may call it at once.
-- Returns the counts and next_in: seconds (on the database's clock) until the next such
-- transition is due; 0 when a batch was full; NULL when nothing waits. A worker calls it
-- when next_in says (engine/worker/timers.py), so that a sleep ends at its time, not on a
-- tick; pg_cron or a loop in psql may call it too.
-- Locks: the waitpoints and runs changed (SKIP LOCKED), then the runs resumed.
CREATE OR REPLACE FUNCTION skiplock.wake_due(
    p_batch integer DEFAULT 1000,
    OUT waitpoints integer, OUT promoted integer, OUT next_in double precision)
LANGUAGE plpgsql
SET jit = off
AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_ids text[];
    v_wp  text;
    v_n   integer := 0;
BEGIN
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.status = 'DELAYED' AND r.delayed_until <= v_now
           AND (r.expires_at IS NULL OR r.expires_at > v_now)
         ORDER BY r.delayed_until
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED);
    UPDATE skiplock.runs r SET status = 'QUEUED', updated_at = v_now WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS promoted = ROW_COUNT;
    IF promoted > 0 THEN
        PERFORM skiplock.notify_runs(v_ids);
        PERFORM skiplock.wake('');
    END IF;

    waitpoints := 0;
    FOR v_wp IN
        SELECT w.id FROM skiplock.waitpoints w
         WHERE w.status = 'PENDING' AND w.type = 'DATETIME' AND w.completes_at <= v_now
         ORDER BY w.completes_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        v_n := v_n + 1;
        waitpoints := waitpoints + skiplock.complete_waitpoint(v_wp, 'null', false)::integer;
    END LOOP;
    FOR v_wp IN
        SELECT w.id FROM skiplock.waitpoints w
         WHERE w.status = 'PENDING' AND w.type = 'TOKEN' AND w.timeout_at <= v_now
         ORDER BY w.timeout_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        v_n := v_n + 1;
        waitpoints := waitpoints + skiplock.complete_waitpoint(
            v_wp, jsonb_build_object('type', 'WaitpointTimeout',
                                     'message', format('token %s timed out', v_wp)), true)::integer;
    END LOOP;

    IF promoted >= p_batch OR v_n >= p_batch THEN
        next_in := 0;  -- more are due: call again at once
        RETURN;
    END IF;
    -- the earliest of what is still pending, each the first entry of its partial index
    -- (rows due already but locked by another caller count as due in 10 ms)
    next_in := extract(epoch FROM least(
        (SELECT min(r.delayed_until) FROM skiplock.runs r WHERE r.status = 'DELAYED'),
        (SELECT min(w.completes_at) FROM skiplock.waitpoints w
          WHERE w.status = 'PENDING' AND w.type = 'DATETIME'),
        (SELECT min(w.timeout_at) FROM skiplock.waitpoints w
          WHERE w.status = 'PENDING' AND w.type = 'TOKEN' AND w.timeout_at IS NOT NULL))
        - skiplock.clock());
    IF next_in IS NOT NULL THEN  -- (greatest would turn NULL into 0.01)
        next_in := greatest(next_in, 0.01);
    END IF;
END;
$$;

-- tick: every time-based transition, in bounded batches: those of wake_due; expire runs
-- whose TTL passed before they started; release PENDING_VERSION runs whose task got
-- deployed; crash the runs of workers whose lease lapsed. At most p_batch runs (workers)
-- of each kind per call. Fire the due schedules (skiplock.fire_schedules). Purge up to
-- 500 runs whose retention ran out (skiplock.purge). Every 10 minutes, also prune the
-- registry (skiplock.prune_registry) and old tokens (skiplock.purge_tokens).
-- Any number of callers may call it (workers, pg_cron): a transaction-scoped advisory
-- lock lets one work while the others only do what wake_due does.
-- Locks: advisory xact lock 'skiplock.tick'; the runs changed (SKIP LOCKED).
-- Returns the counts, with wake_due's next_in; {"skipped": true, ...} when another
-- caller held the lock.
CREATE OR REPLACE FUNCTION skiplock.tick(p_batch integer DEFAULT 1000)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_ids      text[];
    v_expired  integer;
    v_due      record;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('skiplock.tick')) THEN
        -- another caller ticks: still do (and say) what must happen on time
        SELECT * INTO v_due FROM skiplock.wake_due(p_batch);
        RETURN jsonb_build_object('skipped', true, 'waitpoints', v_due.waitpoints,
                                  'promoted', v_due.promoted, 'next_in', v_due.next_in);
    END IF;

    -- first expiry, so that a run both due and expired never starts
    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.expires_at <= v_now AND r.status IN ('PENDING_VERSION', 'DELAYED', 'QUEUED')
         ORDER BY r.expires_at
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED);
    UPDATE skiplock.runs r
       SET status = 'EXPIRED', expired_at = v_now, finished_at = v_now, updated_at = v_now
     WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_expired = ROW_COUNT;
    PERFORM skiplock.notify_runs(v_ids);

    SELECT * INTO v_due FROM skiplock.wake_due(p_batch);

    -- registrations of sessions that are gone (killed, restarted server)
    DELETE FROM skiplock.subscribers s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid);
    DELETE FROM skiplock.subscriptions s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid);

    RETURN jsonb_build_object(
        'waitpoints', v_due.waitpoints,
        'expired', v_expired,
        'promoted', v_due.promoted,
        'next_in', v_due.next_in,
        'released', skiplock.release_pending_versions(NULL, p_batch),
        'crashed', skiplock.crash_lost_workers(p_batch),
        'pruned', CASE WHEN skiplock.due('prune_registry', interval '10 minutes')
                       THEN skiplock.prune_registry() END,
        'scheduled', skiplock.fire_schedules(p_batch),
        'purged', skiplock.purge(500),
        'purged_tokens', CASE WHEN skiplock.due('purge_tokens', interval '10 minutes')
                              THEN skiplock.purge_tokens(skiplock.token_retention()) END);
END;
$$;
