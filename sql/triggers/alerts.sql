-- Trigger of the alerts (its function: sql/functions/66_alerts.sql).

-- runs_failed_alert: an outbox row for each run that fails for good, whatever function
-- fails it (fail_attempt, interrupt_attempt, crash_lost_workers, release_lost_attempts,
-- release_worker_runs...). Not for CANCELED (someone asked for it) nor EXPIRED (the run
-- never started: its TTL did what it was set for, and a backlog expiring at once would
-- be a flood of alerts; the queue metrics show a backlog), as Trigger.dev's run alerts.
-- The WHEN clause is evaluated without calling the function: a status change that is
-- not a failure pays that test alone (plain constants, no function to inline, unlike
-- is_final: see on_waited_run_final). A final status is never left, so the second test
-- only guards against a failed run being updated to the same status again.
CREATE OR REPLACE TRIGGER runs_failed_alert
    AFTER UPDATE OF status ON skiplock.runs
    FOR EACH ROW
    WHEN (NEW.status IN ('FAILED', 'CRASHED', 'SYSTEM_FAILURE', 'TIMED_OUT')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION skiplock.on_run_failed();
