-- Why a run is where it is: one line for people (the run page, `skiplock runs show`).

-- run_status_reason: why the run has not moved on, or NULL when nothing holds it up.
-- PENDING_VERSION: the task (or its pinned version) is in no deployment. DELAYED: until
-- when. QUEUED: its retry backoff, a paused queue, no live worker for its locked version
-- or its task, a queue at its limit, or its rate key out of budget (and when the run
-- may start). DEQUEUED/EXECUTING: a worker whose lease lapsed (maintenance will crash or
-- requeue the run). WAITING: how many waitpoints are pending.
-- Reads only; raises SL001 for an unknown run. Times are shown in UTC.
CREATE OR REPLACE FUNCTION skiplock.run_status_reason(p_run_id text)
RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_run skiplock.runs;
    v_queue skiplock.queues;
    v_worker skiplock.workers;
    v_count bigint;
    v_key text;
    v_interval double precision;
    v_budget double precision;
    v_need integer;
    v_tat timestamptz;
BEGIN
    SELECT * INTO v_run FROM skiplock.runs WHERE id = p_run_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL001', MESSAGE = format('run %s does not exist', p_run_id);
    END IF;
    CASE v_run.status
    WHEN 'PENDING_VERSION' THEN
        IF v_run.version_pinned AND EXISTS (
            SELECT 1 FROM skiplock.deployment_tasks d WHERE d.task_identifier = v_run.task_identifier
        ) THEN
            RETURN format('no deployment has task %s at version %s', v_run.task_identifier,
                          v_run.version);
        END IF;
        RETURN format('no deployment has task %s: start a worker that defines it',
                      v_run.task_identifier);
    WHEN 'DELAYED' THEN
        RETURN format('delayed until %s', skiplock.utc_text(v_run.delayed_until));
    WHEN 'QUEUED' THEN
        IF v_run.available_at > v_now THEN
            RETURN format('attempt %s at %s', v_run.attempt_count + 1,
                          skiplock.utc_text(v_run.available_at));
        END IF;
        SELECT * INTO v_queue FROM skiplock.queues WHERE name = v_run.queue;
        IF v_queue.paused THEN
            RETURN format('queue %s is paused', v_run.queue);
        END IF;
        IF NOT EXISTS (
            SELECT 1 FROM skiplock.workers w
             WHERE w.stopped_at IS NULL AND w.lost_at IS NULL AND w.lease_expires_at > v_now
               AND v_run.task_identifier = ANY (w.tasks)
               AND (v_run.version IS NULL OR w.version = v_run.version)
               AND (w.queues IS NULL OR v_run.queue = ANY (w.queues))
        ) THEN
            RETURN CASE WHEN v_run.version IS NULL
                        THEN format('waiting for a worker with task %s', v_run.task_identifier)
                        ELSE format('waiting for a worker of version %s', v_run.version) END;
        END IF;
        IF v_queue.concurrency_limit IS NOT NULL THEN
            SELECT count(*) INTO v_count FROM skiplock.runs r
             WHERE r.queue = v_run.queue AND r.status IN ('DEQUEUED', 'EXECUTING');
            IF v_count >= v_queue.concurrency_limit THEN
                RETURN format('queue %s is at its concurrency limit (%s running)', v_run.queue,
                              v_count);
            END IF;
        END IF;
        IF v_queue.rate_limit IS NOT NULL THEN
            v_key := coalesce(v_run.rate_limit_key, v_run.concurrency_key, '');
            v_interval := v_queue.rate_period_s / v_queue.rate_limit;
            SELECT skiplock.rate_budget(b.tat, v_now, v_interval, v_queue.rate_burst), b.tat
              INTO v_budget, v_tat
              FROM skiplock.rate_buckets b WHERE b.queue = v_run.queue AND b.key = v_key;
            v_need := least(coalesce(v_run.rate_cost, 1), v_queue.rate_burst);
            IF v_budget < v_need - 1e-9 THEN
                RETURN format('queue %s is rate limited (%s per %s s%s): its next run%s may '
                              'start at %s', v_run.queue, v_queue.rate_limit,
                              v_queue.rate_period_s,
                              CASE WHEN v_key <> '' THEN format(', key %s', v_key) ELSE '' END,
                              CASE WHEN v_need > 1 THEN format(' of cost %s', v_need) ELSE '' END,
                              skiplock.utc_text(v_tat - make_interval(
                                  secs => (v_queue.rate_burst - v_need) * v_interval)));
            END IF;
        END IF;
        RETURN NULL;
    WHEN 'DEQUEUED', 'EXECUTING' THEN
        SELECT * INTO v_worker FROM skiplock.workers WHERE id = v_run.worker_id;
        IF FOUND AND v_worker.lost_at IS NULL AND v_worker.lease_expires_at < v_now THEN
            RETURN format('worker %s lapsed at %s (no heartbeat); maintenance (skiplock.tick) '
                          'will mark the run %s', v_worker.id,
                          skiplock.utc_text(v_worker.lease_expires_at),
                          CASE WHEN v_run.status = 'DEQUEUED' THEN 'QUEUED again'
                               ELSE 'CRASHED' END);
        END IF;
        RETURN NULL;
    WHEN 'WAITING' THEN
        SELECT count(*) INTO v_count FROM skiplock.run_waitpoints e
         WHERE e.run_id = p_run_id AND e.pending;
        RETURN format('waiting on %s pending waitpoint%s', v_count,
                      CASE WHEN v_count = 1 THEN '' ELSE 's' END);
    ELSE
        RETURN NULL;
    END CASE;
END;
$$;

-- utc_text: a time as people read it in a status line, e.g. 2026-12-06 14:03:07 UTC.
CREATE OR REPLACE FUNCTION skiplock.utc_text(p_at timestamptz)
RETURNS text
LANGUAGE sql STABLE
AS $$ SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') || ' UTC' $$;
