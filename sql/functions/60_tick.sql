-- Maintenance: every time-based transition, in bounded batches.

-- tick: complete due DATETIME waitpoints and time out tokens (resuming their runs);
-- expire runs whose TTL passed before they started; promote due DELAYED runs to
-- QUEUED; release PENDING_VERSION runs whose task got deployed; crash the runs of
-- workers whose lease lapsed. At most p_batch runs (workers) of each kind per call.
-- Fire the due schedules (skiplock.fire_schedules). Purge up to 500 runs whose retention ran out (skiplock.purge). Every 10 minutes, also
-- prune the registry (skiplock.prune_registry) and old tokens (skiplock.purge_tokens).
-- Any number of callers may call it (workers, pg_cron): a transaction-scoped advisory
-- lock lets one work while the others return at once.
-- Locks: advisory xact lock 'skiplock.tick'; the runs changed (SKIP LOCKED).
-- Returns the counts, or {"skipped": true}.
CREATE OR REPLACE FUNCTION skiplock.tick(p_batch integer DEFAULT 1000)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_ids      text[];
    v_expired  integer;
    v_promoted integer;
    v_wp       text;
    v_waits    integer := 0;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('skiplock.tick')) THEN
        RETURN jsonb_build_object('skipped', true);
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

    v_ids := ARRAY(
        SELECT r.id FROM skiplock.runs r
         WHERE r.status = 'DELAYED' AND r.delayed_until <= v_now
         ORDER BY r.delayed_until
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED);
    UPDATE skiplock.runs r SET status = 'QUEUED', updated_at = v_now WHERE r.id = ANY (v_ids);
    GET DIAGNOSTICS v_promoted = ROW_COUNT;
    PERFORM skiplock.notify_runs(v_ids);
    IF v_promoted > 0 THEN
        PERFORM skiplock.wake('');
    END IF;

    -- waits whose time has come, and tokens whose timeout passed (an error result)
    FOR v_wp IN
        SELECT w.id FROM skiplock.waitpoints w
         WHERE w.status = 'PENDING' AND w.type = 'DATETIME' AND w.completes_at <= v_now
         ORDER BY w.completes_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        v_waits := v_waits + skiplock.complete_waitpoint(v_wp, 'null', false)::integer;
    END LOOP;
    FOR v_wp IN
        SELECT w.id FROM skiplock.waitpoints w
         WHERE w.status = 'PENDING' AND w.type = 'TOKEN' AND w.timeout_at <= v_now
         ORDER BY w.timeout_at LIMIT p_batch FOR UPDATE SKIP LOCKED
    LOOP
        v_waits := v_waits + skiplock.complete_waitpoint(
            v_wp, jsonb_build_object('type', 'WaitpointTimeout',
                                     'message', format('token %s timed out', v_wp)), true)::integer;
    END LOOP;

    -- registrations of sessions that are gone (killed, restarted server)
    DELETE FROM skiplock.subscribers s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid);
    DELETE FROM skiplock.subscriptions s
     WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.pid = s.pid);

    RETURN jsonb_build_object(
        'waitpoints', v_waits,
        'expired', v_expired,
        'promoted', v_promoted,
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
