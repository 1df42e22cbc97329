-- 0028: rate limits. A queue may bound how many of its runs start per period (limit per
-- period_s, with a burst), for each rate key: a run's rate key is its rate_limit_key, else
-- its concurrency key, else '' (the queue's runs without either share one budget). The
-- claim (skiplock.lock_ready) admits runs by GCRA, the generic cell rate algorithm: one
-- row per (queue, key) holds the theoretical arrival time (tat) of the next run, updated
-- in the claim's transaction under an advisory lock on the key, so the limit holds across
-- any number of workers with no timer process. A run's rate_cost (NULL: 1) is how many
-- units of the budget it takes.

-- a queue's rate: all three set, or none (no rate limit)
ALTER TABLE skiplock.queues
    ADD COLUMN rate_limit integer CHECK (rate_limit >= 1),
    ADD COLUMN rate_period_s double precision
        CHECK (rate_period_s > 0 AND rate_period_s < 'Infinity'),
    ADD COLUMN rate_burst integer CHECK (rate_burst >= 1),
    ADD CONSTRAINT queues_rate_whole CHECK (
        (rate_limit IS NULL) = (rate_period_s IS NULL)
        AND (rate_limit IS NULL) = (rate_burst IS NULL));

ALTER TABLE skiplock.runs
    ADD COLUMN rate_limit_key text CHECK (length(rate_limit_key) BETWEEN 1 AND 256),
    ADD COLUMN rate_cost integer CHECK (rate_cost >= 1);
ALTER TYPE skiplock.run_values ADD ATTRIBUTE rate_limit_key text, ADD ATTRIBUTE rate_cost integer;

-- GCRA state: the next run of (queue, key) conforms once now >= tat - (burst - cost) *
-- period / limit. No row is a full budget, and so is a tat long past: the claim creates
-- rows, tick's prune_registry deletes those past (a key no longer used).
-- Updated in place by every admission: room on the page for HOT updates.
CREATE TABLE skiplock.rate_buckets (
    queue text        NOT NULL,
    key   text        NOT NULL,
    tat   timestamptz NOT NULL,
    CONSTRAINT rate_buckets_pkey PRIMARY KEY (queue, key)
) WITH (fillfactor = 50, autovacuum_vacuum_scale_factor = 0.05,
        autovacuum_vacuum_cost_delay = 0);

-- The ready index's units become (queue, concurrency key, rate key): runs with different
-- rate_limit_keys are separate heads, so a key out of budget holds back only its own runs
-- (the skip scan visits each head; see lock_ready). Runs without a rate_limit_key (all runs
-- before this migration) have '' there: the same units as before.
DROP INDEX skiplock.runs_ready_idx;
CREATE INDEX runs_ready_idx ON skiplock.runs
    (queue, (coalesce(concurrency_key, '')), (coalesce(rate_limit_key, '')), order_at, id)
    WHERE status = 'QUEUED';

-- lock_ready now also says when a held-back run may start (retry_in), and the claims pass
-- it on in a last row without a run: return types CREATE OR REPLACE cannot change. Dropped
-- here; sql/functions/30_dequeue.sql, applied after the migrations, creates them again.
DROP FUNCTION IF EXISTS skiplock.complete_and_claim(jsonb, text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.claim(text, text, text[], text[], integer);
DROP FUNCTION IF EXISTS skiplock.lock_ready(text, text[], text[], integer);
