-- Bench-only prototype, NOT a migration: bench/retention.py applies it to the database of
-- its case B2 (and of the purge-cost measurement), in its own throwaway cluster, to see
-- what deleting runs costs without per-row foreign-key triggers.
--
-- Deleting a run fires, per row, three RI triggers: run_steps_run_id_fkey and
-- run_waitpoints_run_id_fkey (ON DELETE CASCADE: a DELETE ... WHERE run_id = $1 each) and
-- runs_parent_id_fkey (ON DELETE SET NULL: an UPDATE ... WHERE parent_id = $1), besides
-- the statement trigger runs_delete_attempts (migration 0010). Here the three constraints
-- go, as migration 0010 did for attempts, and that one statement trigger does their work
-- for the whole statement through its transition table. What is lost is the check on
-- insert: that run_steps.run_id, run_waitpoints.run_id and runs.parent_id name an
-- existing run. skiplock's own functions write those rows only for a run the same
-- statement holds (steps and edges of a running or waiting run; parent_id of a child
-- triggered by its running parent), and purge deletes only finished runs nobody waits on.
ALTER TABLE skiplock.run_steps DROP CONSTRAINT run_steps_run_id_fkey;
ALTER TABLE skiplock.run_waitpoints DROP CONSTRAINT run_waitpoints_run_id_fkey;
ALTER TABLE skiplock.runs DROP CONSTRAINT runs_parent_id_fkey;

CREATE OR REPLACE FUNCTION skiplock.delete_attempts_of_deleted_runs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM skiplock.attempts a USING deleted_runs d WHERE a.run_id = d.id;
    DELETE FROM skiplock.run_steps s USING deleted_runs d WHERE s.run_id = d.id;
    DELETE FROM skiplock.run_waitpoints e USING deleted_runs d WHERE e.run_id = d.id;
    -- children outlive their parent (what ON DELETE SET NULL did); runs_parent_idx
    UPDATE skiplock.runs r SET parent_id = NULL
      FROM deleted_runs d WHERE r.parent_id = d.id AND r.parent_id IS NOT NULL;
    RETURN NULL;
END;
$$;
