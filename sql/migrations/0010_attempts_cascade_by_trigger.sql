-- 0010_attempts_cascade_by_trigger: attempts rows are written only by skiplock's own
-- functions, each for a run that the same statement updates (and so holds locked), so
-- the foreign key's check on every insert (a FOR KEY SHARE lookup of the run) guarded
-- nothing and cost a claim about 7 of its 45 us of database CPU a run. Its
-- ON DELETE CASCADE stays, as a statement trigger: deleting runs deletes their attempts.
ALTER TABLE skiplock.attempts DROP CONSTRAINT attempts_run_id_fkey;

CREATE FUNCTION skiplock.delete_attempts_of_deleted_runs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM skiplock.attempts a USING deleted_runs d WHERE a.run_id = d.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER runs_delete_attempts AFTER DELETE ON skiplock.runs
    REFERENCING OLD TABLE AS deleted_runs
    FOR EACH STATEMENT EXECUTE FUNCTION skiplock.delete_attempts_of_deleted_runs();
