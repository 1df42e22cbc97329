-- 0027: workers that poll. A worker behind a transaction-mode pooler with no direct
-- session to LISTEN on (poll-only mode) says so at registration; skiplock.wake() then
-- leaves it out when it decides whether anyone could hear a wake-up: with only polling
-- workers, a trigger or a completion sends no NOTIFY (whose commit-time lock every
-- committing transaction that sends one queues on).
ALTER TABLE skiplock.workers ADD COLUMN polls boolean NOT NULL DEFAULT false;
