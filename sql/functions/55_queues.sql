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
