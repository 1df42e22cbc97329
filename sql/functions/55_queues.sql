-- Queues: pause, resume, change the limit at run time (the views that show them:
-- sql/views/).

-- queue_for_update: lock a queue's row, creating it for a queue that only runs name so
-- far; SL006 when no queue by that name exists at all.
CREATE OR REPLACE FUNCTION skiplock.queue_for_update(p_name text) RETURNS skiplock.queues
LANGUAGE plpgsql AS $$
DECLARE
    v_queue skiplock.queues;
BEGIN
    IF EXISTS (SELECT 1 FROM skiplock.runs r WHERE r.queue = p_name) THEN
        INSERT INTO skiplock.queues (name) VALUES (p_name) ON CONFLICT (name) DO NOTHING;
    END IF;
    SELECT * INTO v_queue FROM skiplock.queues q WHERE q.name = p_name FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'SL006', MESSAGE = format('queue %L does not exist', p_name);
    END IF;
    RETURN v_queue;
END;
$$;

-- pause_queue / resume_queue: a paused queue starts nothing; its runs stay QUEUED (and
-- keep expiring by TTL). Running runs finish. Returns the queue's paused flag.
-- Locks: the queue row.
CREATE OR REPLACE FUNCTION skiplock.pause_queue(p_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM skiplock.queue_for_update(p_name);
    UPDATE skiplock.queues SET paused = true, updated_at = skiplock.now() WHERE name = p_name;
    RETURN true;
END;
$$;

CREATE OR REPLACE FUNCTION skiplock.resume_queue(p_name text) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM skiplock.queue_for_update(p_name);
    UPDATE skiplock.queues SET paused = false, updated_at = skiplock.now() WHERE name = p_name;
    PERFORM skiplock.wake(p_name);
    RETURN false;
END;
$$;

-- set_queue_limit: change a queue's concurrency limit (NULL: unlimited). Lowering it
-- stops nothing that runs; new runs start once the holders are below the new limit.
-- SL004 for a limit below 1. Locks: the queue row. Returns the new limit.
CREATE OR REPLACE FUNCTION skiplock.set_queue_limit(p_name text, p_limit integer) RETURNS integer
LANGUAGE plpgsql AS $$
BEGIN
    IF p_limit < 1 THEN
        PERFORM skiplock.invalid(format('a concurrency limit must be at least 1, got %s', p_limit));
    END IF;
    PERFORM skiplock.queue_for_update(p_name);
    UPDATE skiplock.queues SET concurrency_limit = p_limit, updated_at = skiplock.now()
     WHERE name = p_name;
    PERFORM skiplock.wake(p_name);
    RETURN p_limit;
END;
$$;

-- set_queue_rate_limit: change a queue's rate limit: at most p_limit of its runs start
-- per p_period_s seconds for each rate key (a run's rate_limit_key, else its concurrency
-- key, else ''), up to p_burst of them at once after a quiet spell (GCRA: see
-- lock_ready). p_limit NULL: no rate limit (p_period_s and p_burst are then ignored).
-- Takes effect on the next claim. A key keeps the budget it has used, counted in runs:
-- the time its schedule runs ahead is scaled to the new interval, so a change grants no
-- fresh burst and carries no wait at the old rate; clearing the limit forgets the keys.
-- SL004 for a limit or burst below 1 or a period that is not a positive number of
-- seconds; SL006 for an unknown queue.
-- Locks: the queue row, then its rate_buckets rows. Returns the new limit.
CREATE OR REPLACE FUNCTION skiplock.set_queue_rate_limit(
    p_name text, p_limit integer, p_period_s double precision, p_burst integer DEFAULT 1)
RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_now   timestamptz := skiplock.clock();
    v_queue skiplock.queues;
BEGIN
    IF p_limit IS NOT NULL THEN
        IF p_limit < 1 THEN
            PERFORM skiplock.invalid(format('a rate limit must be at least 1, got %s', p_limit));
        END IF;
        IF p_period_s IS NULL OR NOT p_period_s > 0 OR p_period_s = 'Infinity' THEN
            PERFORM skiplock.invalid(format(
                'a rate period must be a positive number of seconds, got %s',
                coalesce(p_period_s::text, 'NULL')));
        END IF;
        IF p_burst IS NULL OR p_burst < 1 THEN
            PERFORM skiplock.invalid(format('a burst must be at least 1, got %s',
                                            coalesce(p_burst::text, 'NULL')));
        END IF;
    END IF;
    v_queue := skiplock.queue_for_update(p_name);
    IF p_limit IS NULL THEN
        DELETE FROM skiplock.rate_buckets b WHERE b.queue = p_name;
    ELSIF v_queue.rate_limit IS NOT NULL THEN
        UPDATE skiplock.rate_buckets b
           SET tat = v_now + (b.tat - v_now) * ((p_period_s / p_limit)
                                                / (v_queue.rate_period_s / v_queue.rate_limit))
         WHERE b.queue = p_name AND b.tat > v_now;
    END IF;
    UPDATE skiplock.queues
       SET rate_limit = p_limit,
           rate_period_s = CASE WHEN p_limit IS NOT NULL THEN p_period_s END,
           rate_burst = CASE WHEN p_limit IS NOT NULL THEN p_burst END,
           updated_at = skiplock.now()
     WHERE name = p_name;
    PERFORM skiplock.wake(p_name);
    RETURN p_limit;
END;
$$;
