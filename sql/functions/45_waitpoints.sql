-- Waitpoints: blocking runs, completing waitpoints, resuming runs, the durable call log.
--
-- Lock order, the same for every caller (so no two can deadlock):
--   1. the run being finished (completion, failure, cancel: its own functions);
--   2. waitpoint rows: UPDATE to complete one; FOR SHARE, in id order, to block on one;
--   3. the run being resumed or blocked, FOR NO KEY UPDATE;
--   4. that run's blocking edges (run_waitpoints), as a run's delete cascades to them.
-- A child's trigger takes its parent FOR KEY SHARE, which conflicts with none of these.
-- Blocking takes the waitpoints FOR SHARE before inserting its edges: a completion either
-- committed before (the pending count sees it, and the run does not suspend) or waits for
-- the blocker's commit and then sees its edge (and resumes the run). No lost wake-up.
-- An edge is `pending` while its waitpoint is: block_run sets it from the waitpoint it
-- holds, complete_waitpoint (the one place a waitpoint completes) clears it. Only pending
-- edges are in the partial index run_waitpoints_pending_idx (migration 0033).

-- resume_if_ready: a WAITING run none of whose blocking edges is pending goes back to
-- QUEUED, keeping its order_at (ahead of runs queued after it first was). Returns true if
-- resumed. It reads the run's pending edges only (those of the wait it is in), not every
-- edge of its past waits: a run of 1,000 past waits and child calls had its 1,000 edges
-- probed (6 ms), or scanned when the planner chose so (70 to 100 ms).
CREATE OR REPLACE FUNCTION skiplock.resume_if_ready(p_run_id text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT * INTO v_run FROM skiplock.runs WHERE id = p_run_id FOR NO KEY UPDATE;
    IF NOT FOUND OR v_run.status <> 'WAITING' THEN
        RETURN false;
    END IF;
    IF EXISTS (SELECT 1 FROM skiplock.run_waitpoints e WHERE e.run_id = p_run_id AND e.pending) THEN
        RETURN false;
    END IF;
    UPDATE skiplock.runs SET status = 'QUEUED', available_at = skiplock.now(),
                             updated_at = skiplock.now()
     WHERE id = p_run_id;
    PERFORM skiplock.notify_runs(ARRAY[p_run_id]);
    PERFORM skiplock.wake(v_run.queue);
    RETURN true;
END;
$$;

-- complete_waitpoint: complete a pending waitpoint once (a second completion keeps the
-- first output and returns false), clear its edges' pending flag, and resume every run it
-- was the last pending waitpoint of. Locks: the waitpoint, then each blocked run in id
-- order, then that run's edge (the order of a run's delete and its cascade: locking the
-- edges first could deadlock with the purge of a cancelled run that still had one).
CREATE OR REPLACE FUNCTION skiplock.complete_waitpoint(
    p_id text, p_output jsonb, p_is_error boolean DEFAULT false)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_run text;
BEGIN
    UPDATE skiplock.waitpoints
       SET status = 'COMPLETED', output = p_output, is_error = coalesce(p_is_error, false),
           completed_at = skiplock.now()
     WHERE id = p_id AND status = 'PENDING';
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOR v_run IN SELECT e.run_id FROM skiplock.run_waitpoints e
                  WHERE e.waitpoint_id = p_id AND e.pending ORDER BY e.run_id LOOP
        UPDATE skiplock.run_waitpoints e SET pending = false
          FROM (SELECT r.id FROM skiplock.runs r WHERE r.id = v_run FOR NO KEY UPDATE) r
         WHERE e.run_id = r.id AND e.waitpoint_id = p_id;
        PERFORM skiplock.resume_if_ready(v_run);
    END LOOP;
    RETURN true;
END;
$$;

-- complete_token: the public way to complete a TOKEN waitpoint. SL007 when there is no
-- such token. Returns true if this call completed it (false: it was already complete,
-- and keeps its first output).
CREATE OR REPLACE FUNCTION skiplock.complete_token(p_token_id text, p_output jsonb DEFAULT 'null')
RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM skiplock.waitpoints WHERE id = p_token_id AND type = 'TOKEN') THEN
        RAISE EXCEPTION USING ERRCODE = 'SL007', MESSAGE = format('token %s does not exist', p_token_id);
    END IF;
    RETURN skiplock.complete_waitpoint(p_token_id, coalesce(p_output, 'null'), false);
END;
$$;

-- create_token: a TOKEN waitpoint. Options: timeout (s), idempotency_key,
-- idempotency_key_ttl (s), tags; any other key is SL004. With a live key, the existing
-- token is returned.
-- Returns (waitpoint_id, is_cached).
CREATE OR REPLACE FUNCTION skiplock.create_token(p_options jsonb DEFAULT '{}')
RETURNS TABLE (waitpoint_id text, is_cached boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_opts jsonb := coalesce(p_options, '{}');
    c_keys CONSTANT text[] := ARRAY['timeout', 'idempotency_key', 'idempotency_key_ttl', 'tags'];
    v_key  text := v_opts->>'idempotency_key';
    v_id   text;
BEGIN
    PERFORM skiplock.check_keys(v_opts, c_keys, 'options', 'token option');
    IF (v_opts->>'timeout')::double precision <= 0 THEN
        PERFORM skiplock.invalid('token timeout must be positive');
    END IF;
    IF v_key IS NOT NULL THEN
        -- an expired key is released (set to NULL on the token that held it) so that a
        -- new token can take it
        UPDATE skiplock.waitpoints w SET idempotency_key = NULL
         WHERE w.type = 'TOKEN' AND w.idempotency_key = v_key
           AND w.idempotency_key_expires_at <= v_now;
    END IF;
    INSERT INTO skiplock.waitpoints AS w (id, type, timeout_at, idempotency_key,
                                          idempotency_key_expires_at, tags, created_at)
    VALUES (skiplock.gen_id('waitpoint'), 'TOKEN',
            v_now + make_interval(secs => (v_opts->>'timeout')::double precision), v_key,
            v_now + make_interval(secs => (v_opts->>'idempotency_key_ttl')::double precision),
            coalesce(ARRAY(SELECT jsonb_array_elements_text(v_opts->'tags')), '{}'), v_now)
    ON CONFLICT (idempotency_key) WHERE type = 'TOKEN' AND idempotency_key IS NOT NULL
    DO NOTHING
    RETURNING w.id INTO v_id;
    IF v_id IS NOT NULL THEN
        RETURN QUERY SELECT v_id, false;
    ELSE
        RETURN QUERY SELECT w.id, true FROM skiplock.waitpoints w
                      WHERE w.type = 'TOKEN' AND w.idempotency_key = v_key;
    END IF;
END;
$$;

-- current_run: the run of attempt p_attempt_id, locked, if that attempt is current and
-- EXECUTING (the fence of every write a running task makes); NULL otherwise.
CREATE OR REPLACE FUNCTION skiplock.current_run(p_attempt_id text) RETURNS skiplock.runs
LANGUAGE plpgsql AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    SELECT r.* INTO v_run FROM skiplock.runs r
     WHERE r.id = (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id)
       AND r.current_attempt_id = p_attempt_id AND r.status = 'EXECUTING'
       FOR NO KEY UPDATE;
    RETURN v_run;
END;
$$;

-- block_run: record durable call p_position of the attempt's run and make the run wait on
-- p_waitpoint_ids. Returns 'CONTINUE' when none is pending (the call returns at once),
-- 'WAITING' when the run was suspended (WAITING, slot and worker freed, attempt
-- SUSPENDED, all in this transaction), 'FENCED' when the attempt is no longer current.
CREATE OR REPLACE FUNCTION skiplock.block_run(
    p_attempt_id text, p_position integer, p_kind text, p_name text,
    p_waitpoint_ids text[], p_output jsonb DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_run skiplock.runs;
BEGIN
    PERFORM 1 FROM skiplock.waitpoints w WHERE w.id = ANY (p_waitpoint_ids)
     ORDER BY w.id FOR SHARE;
    v_run := skiplock.current_run(p_attempt_id);
    IF v_run.id IS NULL THEN
        RETURN 'FENCED';
    END IF;
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, waitpoint_id, created_at)
    VALUES (v_run.id, p_position, p_kind, p_name, p_output, p_waitpoint_ids[1], v_now)
    ON CONFLICT (run_id, position) DO NOTHING;
    -- an unknown id gets an edge too, which its foreign key refuses
    INSERT INTO skiplock.run_waitpoints (run_id, waitpoint_id, created_at, pending)
    SELECT v_run.id, u.id, v_now, coalesce(w.status = 'PENDING', false)
      FROM unnest(p_waitpoint_ids) u(id) LEFT JOIN skiplock.waitpoints w ON w.id = u.id
    ON CONFLICT DO NOTHING;
    IF NOT EXISTS (SELECT 1 FROM skiplock.waitpoints w
                    WHERE w.id = ANY (p_waitpoint_ids) AND w.status = 'PENDING') THEN
        RETURN 'CONTINUE';
    END IF;
    UPDATE skiplock.runs
       SET status = 'WAITING', suspended = true, worker_id = NULL, updated_at = v_now
     WHERE id = v_run.id;
    UPDATE skiplock.attempts SET status = 'SUSPENDED' WHERE id = p_attempt_id;
    PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
    RETURN 'WAITING';
END;
$$;

-- wait_until: durable call p_position waits until p_until (a DATETIME waitpoint, complete
-- already if the time has passed). Returns block_run's answer.
CREATE OR REPLACE FUNCTION skiplock.wait_until(
    p_attempt_id text, p_position integer, p_name text, p_until timestamptz)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_now timestamptz := skiplock.now();
    v_id  text := skiplock.gen_id('waitpoint');
BEGIN
    INSERT INTO skiplock.waitpoints (id, type, status, completes_at, created_at, completed_at)
    VALUES (v_id, 'DATETIME', CASE WHEN p_until <= v_now THEN 'COMPLETED'
                                   ELSE 'PENDING' END::skiplock.waitpoint_status,
            p_until, v_now, CASE WHEN p_until <= v_now THEN v_now END);
    RETURN skiplock.block_run(p_attempt_id, p_position, 'wait', p_name, ARRAY[v_id]);
END;
$$;

-- run_waitpoint: the RUN waitpoint of p_run_id, made on first use (complete at once when
-- the run is already final). Marks the run waited_on. Returns its id.
CREATE OR REPLACE FUNCTION skiplock.run_waitpoint(p_run_id text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_id  text;
    v_run skiplock.runs;
BEGIN
    SELECT w.id INTO v_id FROM skiplock.waitpoints w WHERE w.type = 'RUN' AND w.run_id = p_run_id;
    IF v_id IS NOT NULL THEN
        RETURN v_id;
    END IF;
    UPDATE skiplock.runs SET waited_on = true WHERE id = p_run_id RETURNING * INTO v_run;
    INSERT INTO skiplock.waitpoints (id, type, status, run_id, output, is_error, created_at,
                                     completed_at)
    VALUES (skiplock.gen_id('waitpoint'), 'RUN',
            CASE WHEN skiplock.is_final(v_run.status) THEN 'COMPLETED'
                 ELSE 'PENDING' END::skiplock.waitpoint_status,
            p_run_id, CASE WHEN skiplock.is_final(v_run.status) THEN skiplock.run_result(v_run) END,
            v_run.status <> 'COMPLETED', skiplock.now(),
            CASE WHEN skiplock.is_final(v_run.status) THEN skiplock.now() END)
    ON CONFLICT (run_id) WHERE type = 'RUN' DO NOTHING
    RETURNING id INTO v_id;
    RETURN coalesce(v_id, (SELECT w.id FROM skiplock.waitpoints w
                            WHERE w.type = 'RUN' AND w.run_id = p_run_id));
END;
$$;

-- run_result: what a waiter sees of a final run.
CREATE OR REPLACE FUNCTION skiplock.run_result(p_run skiplock.runs) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object('run_id', p_run.id, 'status', p_run.status,
                              'output', p_run.output, 'error', p_run.error)
$$;

-- trigger_and_wait: durable call p_position triggers a child run of p_task (on the
-- parent's version unless the options pin one) and waits for it. A child found by
-- idempotency key that already finished completes the wait at once.
-- Returns (child run id, block_run's answer).
CREATE OR REPLACE FUNCTION skiplock.trigger_and_wait(
    p_attempt_id text, p_position integer, p_task text, p_payload jsonb, p_options jsonb)
RETURNS TABLE (child_id text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_parent text := (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id);
    v_child  text;
    v_wp     text;
BEGIN
    SELECT t.run_id INTO v_child FROM skiplock.trigger(p_task, p_payload,
        jsonb_build_object('parent_id', v_parent,
                           'version', (SELECT r.version FROM skiplock.runs r WHERE r.id = v_parent))
        || coalesce(p_options, '{}')) t;
    v_wp := skiplock.run_waitpoint(v_child);
    RETURN QUERY SELECT v_child, skiplock.block_run(p_attempt_id, p_position, 'run', p_task,
                                                    ARRAY[v_wp], to_jsonb(v_child));
END;
$$;

-- batch_results: what the runs of batch p_batch_id ended with (id, status, output, error),
-- in id order. A BATCH waitpoint keeps them when it completes, so a replayed
-- batch_trigger_and_wait reads them with the run's log (run_log): no query of its own,
-- and no need for its children's rows to exist still. STABLE: it sees what the calling
-- statement sees, so call it in a statement begun after the last child's count-off.
CREATE OR REPLACE FUNCTION skiplock.batch_results(p_batch_id text) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.id, 'status', r.status,
                                                 'output', r.output, 'error', r.error)
                              ORDER BY r.id), '[]')
      FROM skiplock.runs r
     WHERE r.id = ANY ((SELECT b.run_ids FROM skiplock.batches b WHERE b.id = p_batch_id)::text[])
       AND r.batch_id = p_batch_id
$$;

-- batch_trigger_and_wait: durable call p_position triggers a batch of child runs and
-- waits for all of them (a BATCH waitpoint counting the runs not final yet).
-- Returns (batch id, block_run's answer).
CREATE OR REPLACE FUNCTION skiplock.batch_trigger_and_wait(
    p_attempt_id text, p_position integer, p_task text, p_items jsonb, p_options jsonb)
RETURNS TABLE (batch_id text, outcome text)
LANGUAGE plpgsql AS $$
DECLARE
    v_parent  text := (SELECT a.run_id FROM skiplock.attempts a WHERE a.id = p_attempt_id);
    v_batch   text;
    v_pending integer;
    v_wp      text := skiplock.gen_id('waitpoint');
BEGIN
    SELECT min(t.batch_id) INTO v_batch FROM skiplock.trigger_batch(p_task, p_items,
        jsonb_build_object('parent_id', v_parent,
                           'version', (SELECT r.version FROM skiplock.runs r WHERE r.id = v_parent))
        || coalesce(p_options, '{}')) t;
    WITH marked AS (
        UPDATE skiplock.runs r SET waited_on = true
         WHERE r.id = ANY ((SELECT b.run_ids FROM skiplock.batches b WHERE b.id = v_batch)::text[])
        RETURNING r.status)
    SELECT count(*) FILTER (WHERE NOT skiplock.is_final(m.status)) INTO v_pending FROM marked m;
    INSERT INTO skiplock.waitpoints (id, type, status, batch_id, pending_runs, created_at,
                                     completed_at, results)
    VALUES (v_wp, 'BATCH', CASE WHEN v_pending = 0 THEN 'COMPLETED'
                                ELSE 'PENDING' END::skiplock.waitpoint_status,
            v_batch, v_pending, skiplock.now(), CASE WHEN v_pending = 0 THEN skiplock.now() END,
            CASE WHEN v_pending = 0 THEN skiplock.batch_results(v_batch) END);
    RETURN QUERY SELECT v_batch, skiplock.block_run(p_attempt_id, p_position, 'batch', p_task,
                                                    ARRAY[v_wp], to_jsonb(v_batch));
END;
$$;

-- on_waited_run_final: when a run some waitpoint waits for reaches a final status,
-- complete its RUN waitpoint with its result and count it off its BATCH waitpoint.
-- The status test is here, and the trigger's WHEN (sql/triggers/waitpoints.sql) names
-- one column: a WHEN clause is prepared anew for every statement that updates runs, and
-- testing the status there cost every status change 25 us, waited on or not.
CREATE OR REPLACE FUNCTION skiplock.on_waited_run_final() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    v_wp skiplock.waitpoints;
BEGIN
    IF NOT skiplock.is_final(NEW.status) OR skiplock.is_final(OLD.status) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_wp FROM skiplock.waitpoints w WHERE w.type = 'RUN' AND w.run_id = NEW.id;
    IF FOUND THEN
        PERFORM skiplock.complete_waitpoint(v_wp.id, skiplock.run_result(NEW),
                                            NEW.status <> 'COMPLETED');
    END IF;
    IF NEW.batch_id IS NOT NULL THEN
        UPDATE skiplock.waitpoints w SET pending_runs = w.pending_runs - 1
         WHERE w.type = 'BATCH' AND w.batch_id = NEW.batch_id AND w.status = 'PENDING'
        RETURNING * INTO v_wp;
        IF FOUND AND v_wp.pending_runs <= 0 THEN
            -- a statement of its own: its snapshot, taken after the count-off above (which
            -- waited for any sibling's count-off to commit), sees every child final
            UPDATE skiplock.waitpoints w SET results = skiplock.batch_results(NEW.batch_id)
             WHERE w.id = v_wp.id;
            PERFORM skiplock.complete_waitpoint(v_wp.id, to_jsonb(NEW.batch_id), false);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;

-- record_step: record the result of durable step p_position of the attempt's run, fenced
-- by attempt; p_seconds is how long the step function ran (the worker measures it), which
-- dates the step's start back from now (its end). Returns false when the attempt is no
-- longer current.
CREATE OR REPLACE FUNCTION skiplock.record_step(
    p_attempt_id text, p_position integer, p_name text, p_output jsonb,
    p_seconds double precision DEFAULT NULL)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_run skiplock.runs := skiplock.current_run(p_attempt_id);
    v_now timestamptz := skiplock.now();
BEGIN
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, created_at, started_at)
    VALUES (v_run.id, p_position, 'step', p_name, p_output, v_now,
            CASE WHEN p_seconds IS NOT NULL
                 THEN v_now - make_interval(secs => greatest(p_seconds, 0)) END)
    ON CONFLICT (run_id, position) DO NOTHING;
    RETURN true;
END;
$$;

-- record_steps: record_step for many attempts in one statement (and one commit): a
-- worker groups the steps that finished while its previous batch was being written.
-- p_steps: [{attempt_id, position, name, output, seconds}, ...]. Fenced as record_step:
-- only attempts still current and EXECUTING write. Locks: their runs, FOR NO KEY UPDATE,
-- in id order (a batch never deadlocks with another). Returns the attempt ids that were
-- no longer current (their steps were not recorded).
CREATE OR REPLACE FUNCTION skiplock.record_steps(p_steps jsonb)
RETURNS SETOF text
LANGUAGE plpgsql
SET enable_seqscan = off SET jit = off
AS $$
DECLARE
    v_now  timestamptz := skiplock.now();
    v_live text[];
BEGIN
    v_live := ARRAY(
        SELECT r.current_attempt_id
          FROM skiplock.runs r
         WHERE r.id IN (SELECT a.run_id FROM skiplock.attempts a
                         WHERE a.id IN (SELECT x->>'attempt_id'
                                          FROM jsonb_array_elements(p_steps) x))
           AND r.status = 'EXECUTING'
         ORDER BY r.id
           FOR NO KEY UPDATE);
    INSERT INTO skiplock.run_steps (run_id, position, kind, name, output, created_at, started_at)
    SELECT a.run_id, s.position, 'step', s.name, s.output, v_now,
           CASE WHEN s.seconds IS NOT NULL
                THEN v_now - make_interval(secs => greatest(s.seconds, 0)) END
      FROM jsonb_to_recordset(p_steps)
           AS s (attempt_id text, position integer, name text, output jsonb,
                 seconds double precision)
      JOIN skiplock.attempts a ON a.id = s.attempt_id
     WHERE s.attempt_id = ANY (v_live)
    ON CONFLICT (run_id, position) DO NOTHING;
    RETURN QUERY SELECT DISTINCT x->>'attempt_id' FROM jsonb_array_elements(p_steps) x
                  WHERE NOT (x->>'attempt_id') = ANY (v_live);
END;
$$;

-- run_log: the durable call log of a run, with each waitpoint's state, for replay: all a
-- replay needs, so that a resume reads it once whatever the number of calls. A token's
-- waitpoint holds its output; a child run's RUN waitpoint, what the child ended with
-- (run_result); a batch's BATCH waitpoint, its runs' results (batch_results).
CREATE OR REPLACE FUNCTION skiplock.run_log(p_run_id text)
RETURNS TABLE (step integer, kind text, name text, output jsonb, waitpoint_id text,
               waitpoint_status skiplock.waitpoint_status, waitpoint_output jsonb,
               waitpoint_is_error boolean, batch_results jsonb)
LANGUAGE sql STABLE AS $$
    SELECT s.position, s.kind, s.name, s.output, s.waitpoint_id, w.status, w.output, w.is_error,
           w.results
      FROM skiplock.run_steps s LEFT JOIN skiplock.waitpoints w ON w.id = s.waitpoint_id
     WHERE s.run_id = p_run_id
     ORDER BY s.position
$$;

-- update_metadata: replace the run's metadata from inside a running attempt (fenced by
-- attempt; at most 256 KB). Returns false when the attempt is no longer current.
CREATE OR REPLACE FUNCTION skiplock.update_metadata(p_attempt_id text, p_metadata jsonb)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    v_run skiplock.runs;
BEGIN
    IF octet_length(p_metadata::text) > 262144 THEN
        PERFORM skiplock.invalid('metadata must be at most 256 KB');
    END IF;
    v_run := skiplock.current_run(p_attempt_id);
    IF v_run.id IS NULL THEN
        RETURN false;
    END IF;
    UPDATE skiplock.runs SET metadata = p_metadata, updated_at = skiplock.now() WHERE id = v_run.id;
    PERFORM skiplock.notify_runs(ARRAY[v_run.id]);
    RETURN true;
END;
$$;
