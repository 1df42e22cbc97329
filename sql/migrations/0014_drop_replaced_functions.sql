-- 0014_drop_replaced_functions: functions that later versions replaced, dropped here once
-- instead of by the function files at every re-application. Migrations run before the
-- function files, which then create the current versions.
-- subscription_settled(h): callers compare pg_snapshot_xmin with subscription_horizon().
DROP FUNCTION IF EXISTS skiplock.subscription_settled(xid8);
-- register_worker without the lease length (p_lease_seconds, now an eighth argument).
DROP FUNCTION IF EXISTS skiplock.register_worker(text, text, text, integer, text[], integer, jsonb);
-- claim returns each run's metadata since waitpoints, and CREATE OR REPLACE cannot change
-- a return type. Its arguments did not change, so this drops the current claim too:
-- 30_dequeue.sql, changed along with this migration, is applied after it and creates it.
DROP FUNCTION IF EXISTS skiplock.claim(text, text, text[], text[], integer);
