-- 0012_parked_runs_index: runs_active_idx (every run not final, by id) took an entry at
-- the insert of every run and again at its claim (a non-HOT update), for one use: listing
-- runs in progress newest first. It now holds only the statuses runs can linger in for
-- hours or days (PENDING_VERSION, DELAYED, WAITING), which a hot path never enters; the
-- others have small or recent sets that other indexes already reach: QUEUED runs
-- (runs_ready_idx, and the newest runs first by the primary key), DEQUEUED and EXECUTING
-- (runs_slots_idx: the runs in flight). list_runs plans each call for its filters.
--
-- Measured on PostgreSQL 18, against 0011 (interleaved A/B): a serial loop's backend
-- CPU a run, 3 pairs: enqueue (batches of 1,000) 12.2/11.2/11.8 -> 9.8/10.2/11.8 us,
-- claim 34.2/40.8/37.4 -> 31.3/38.2/35.3, completion unchanged. Listing the 20 newest
-- QUEUED runs of 50,000 (after 100,000 completed): 1.7 ms, 37 ms on statistics taken
-- before they were queued, 24 ms when 200,000 newer runs are completed.

DROP INDEX skiplock.runs_active_idx;

CREATE INDEX runs_parked_idx ON skiplock.runs (id)
    WHERE status IN ('PENDING_VERSION', 'DELAYED', 'WAITING');
