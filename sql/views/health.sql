-- The tables as an operator watches them: are they staying small, is vacuum keeping up.

-- table_health: a row per table of the skiplock schema: its size (heap, indexes, all),
-- live and dead tuples (estimates from the statistics collector), changes since the
-- last analyze, and when (auto)vacuum and (auto)analyze last ran.
CREATE OR REPLACE VIEW skiplock.table_health AS
SELECT c.relname AS table_name,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       s.n_live_tup AS live_tuples,
       s.n_dead_tup AS dead_tuples,
       round(s.n_dead_tup::numeric / nullif(s.n_live_tup + s.n_dead_tup, 0), 3) AS dead_ratio,
       s.n_mod_since_analyze AS changed_since_analyze,
       greatest(s.last_vacuum, s.last_autovacuum) AS last_vacuum,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyze,
       s.vacuum_count + s.autovacuum_count AS vacuums,
       s.analyze_count + s.autoanalyze_count AS analyzes
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
 WHERE n.nspname = 'skiplock' AND c.relkind IN ('r', 'p');
