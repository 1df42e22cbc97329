-- Alerts: the outbox of runs that failed for good (table skiplock.alerts, 0023), written
-- by trigger runs_failed_alert in the transaction that fails the run, whichever function
-- does it; delivered at least once by the workers of engines with alert callbacks or
-- webhooks (engine/worker/alerts.py): claim_alerts takes a few under a lease, the worker
-- calls the callbacks and webhooks, record_alert says how it went. A worker that dies
-- between its callbacks and record_alert leaves the alert to be taken again once the
-- lease runs out: a second delivery, with the same alert id to dedupe by.

-- on_run_failed: write the outbox row of a run that just failed for good, and tell the
-- workers (channel skiplock_alerts, sent only while some worker holds a current lease:
-- nobody else listens there; a worker polls anyway). The trigger's WHEN clause
-- (sql/triggers/alerts.sql) is what every status change pays; this runs only on failures.
CREATE OR REPLACE FUNCTION skiplock.on_run_failed() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    INSERT INTO skiplock.alerts (id, run_id, task_identifier, status, created_at, available_at)
    VALUES (skiplock.gen_id('alert'), NEW.id, NEW.task_identifier, NEW.status,
            coalesce(NEW.finished_at, v_now), v_now);
    IF EXISTS (SELECT 1 FROM skiplock.workers w  -- a polling one hears nothing (0027)
                WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND NOT w.polls
                  AND w.lease_expires_at > v_now) THEN
        PERFORM pg_notify('skiplock_alerts', '');
    END IF;
    RETURN NULL;
END;
$$;

-- claim_alerts: take up to p_limit pending alerts that are due, oldest due first, for
-- worker p_worker_id to deliver: each is held p_lease seconds (not taken by anyone
-- else meanwhile) and its attempts counted up. Pending alerts due whose run failed more
-- than p_max_age seconds ago are abandoned instead, up to 1000 a call: a dead endpoint is
-- not retried forever, and an app that starts alerting is not sent the failures of
-- before (they were written all along).
-- Locks: the alerts taken (SKIP LOCKED: concurrent claimers take different ones).
-- Returns the alerts taken, with `attempts` the number of this delivery (1: the first)
-- and `delivered_to` the sinks an earlier delivery reached.
CREATE OR REPLACE FUNCTION skiplock.claim_alerts(
    p_worker_id text, p_limit integer, p_lease double precision,
    p_max_age double precision DEFAULT 86400)
RETURNS TABLE (id text, run_id text, task_identifier text, status skiplock.run_status,
               created_at timestamptz, attempts integer, delivered_to text[])
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    UPDATE skiplock.alerts a
       SET state = 'ABANDONED', finished_at = v_now,
           last_error = format('not delivered within %s s of the failure', p_max_age)
                        || coalesce(' (last error: ' || a.last_error || ')', '')
     WHERE a.id = ANY (ARRAY(
        SELECT o.id FROM skiplock.alerts o
         WHERE o.state = 'PENDING' AND o.available_at <= v_now
           AND o.created_at < v_now - p_max_age * interval '1 second'
         ORDER BY o.available_at
         LIMIT 1000
           FOR UPDATE SKIP LOCKED));
    RETURN QUERY
    UPDATE skiplock.alerts a
       SET attempts = a.attempts + 1, claimed_by = p_worker_id,
           available_at = v_now + p_lease * interval '1 second'
     WHERE a.id = ANY (ARRAY(
        SELECT o.id FROM skiplock.alerts o
         WHERE o.state = 'PENDING' AND o.available_at <= v_now
         ORDER BY o.available_at, o.id
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED))
    RETURNING a.id, a.run_id, a.task_identifier, a.status, a.created_at, a.attempts,
              a.delivered_to;
END;
$$;

-- record_alert: how delivery p_attempt of alert p_id went. p_delivered_to: the sinks it
-- reached (kept, so that a retry skips them); p_error NULL: all of them, the alert is
-- DELIVERED; else it stays PENDING and is due again in p_retry_delay seconds, unless a
-- later delivery took it meanwhile (its lease ran out: that one decides).
-- Locks: the alert row. Returns false when the alert is no longer pending.
CREATE OR REPLACE FUNCTION skiplock.record_alert(
    p_id text, p_attempt integer, p_delivered_to text[], p_error text,
    p_retry_delay double precision DEFAULT 0)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := skiplock.now();
BEGIN
    UPDATE skiplock.alerts a
       SET delivered_to = ARRAY(SELECT DISTINCT s FROM unnest(a.delivered_to || p_delivered_to) s
                                 ORDER BY s),
           state = CASE WHEN p_error IS NULL THEN 'DELIVERED' ELSE a.state END,
           finished_at = CASE WHEN p_error IS NULL THEN v_now END,
           last_error = coalesce(p_error, a.last_error),
           available_at = CASE WHEN p_error IS NOT NULL AND a.attempts = p_attempt
                               THEN v_now + greatest(p_retry_delay, 0) * interval '1 second'
                               ELSE a.available_at END
     WHERE a.id = p_id AND a.state = 'PENDING';
    RETURN FOUND;
END;
$$;
