-- 0015: a run counts the times a worker's shutdown interrupted it, apart from its attempts
-- (an interrupted attempt is continued, not retried: see skiplock.interrupt_attempt).
ALTER TABLE skiplock.runs ADD COLUMN interruptions integer NOT NULL DEFAULT 0;
