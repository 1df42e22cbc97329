-- Triggers of the waitpoints (their functions: sql/functions/45_waitpoints.sql).

-- runs_waited_on_final: on_waited_run_final for the runs some waitpoint waits for. The
-- function tests the status, not WHEN: see why there.
CREATE OR REPLACE TRIGGER runs_waited_on_final
    AFTER UPDATE OF status ON skiplock.runs
    FOR EACH ROW
    WHEN (NEW.waited_on)
    EXECUTE FUNCTION skiplock.on_waited_run_final();
