-- Maintenance: time-based transitions, in bounded batches.

-- tick: promote due DELAYED runs to QUEUED, and release PENDING_VERSION runs whose task
-- got deployed (at most p_batch of each per call).
-- Any number of callers may call it (workers, pg_cron): a transaction-scoped advisory
-- lock lets one work while the others return at once.
-- Locks: advisory xact lock 'skiplock.tick'; the promoted runs (SKIP LOCKED).
-- Returns {"promoted": n, "released": n} or {"skipped": true}.
CREATE OR REPLACE FUNCTION skiplock.tick(p_batch integer DEFAULT 1000)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now      timestamptz := skiplock.now();
    v_promoted integer;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtext('skiplock.tick')) THEN
        RETURN jsonb_build_object('skipped', true);
    END IF;
    WITH due AS (
        SELECT r.id FROM skiplock.runs r
         WHERE r.status = 'DELAYED' AND r.delayed_until <= v_now
         ORDER BY r.delayed_until
         LIMIT p_batch
         FOR UPDATE SKIP LOCKED)
    UPDATE skiplock.runs r SET status = 'QUEUED', updated_at = v_now
      FROM due WHERE r.id = due.id;
    GET DIAGNOSTICS v_promoted = ROW_COUNT;
    IF v_promoted > 0 THEN
        PERFORM pg_notify('skiplock_wake', '');
    END IF;
    RETURN jsonb_build_object('promoted', v_promoted,
                              'released', skiplock.release_pending_versions(NULL, p_batch));
END;
$$;
