-- Triggers of the waitpoints (their functions: sql/functions/45_waitpoints.sql).

-- runs_waited_on_final: completes the RUN and BATCH waitpoints of a run some waitpoint
-- waits for when it reaches a final status (see on_waited_run_final, which tests the
-- status: the WHEN clause names one column because it is prepared anew for every
-- statement that updates runs).
CREATE OR REPLACE TRIGGER runs_waited_on_final
    AFTER UPDATE OF status ON skiplock.runs
    FOR EACH ROW
    WHEN (NEW.waited_on)
    EXECUTE FUNCTION skiplock.on_waited_run_final();
