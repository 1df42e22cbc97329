#!/bin/bash
# The measured sequence (fresh schema per variant). Usage: ./run_chain.sh
cd /work/main
DSN="host=/work/research-retention port=55432 user=postgres dbname=postgres"
run() { echo "=== $*"; .venv/bin/python bench/retention_study/bench_retention.py --dsn "$DSN" --fresh --retention 60 --sample 10 "$@" > bench/retention_study/results/$2.log 2>&1; tail -1 bench/retention_study/results/$2.log | cut -c1-300; psql "$DSN" -qc "CHECKPOINT"; }
run --variant A_none          --purge none  --duration 180
run --variant B_idx1000_avdef --purge index --limit 1000 --duration 180
run --variant C_idx1000_avtun --purge index --limit 1000 --duration 180 --autovac tuned
run --variant D_hold_avtun    --purge index --limit 1000 --duration 300 --autovac tuned --hold-at 60 --hold-for 120
run --variant E_idx5000_avtun --purge index --limit 5000 --duration 90 --autovac tuned
run --variant F_idx500_avtun  --purge index --limit 500  --duration 90 --autovac tuned
run --variant G_id1000_avtun  --purge id    --limit 1000 --duration 90 --autovac tuned
run --variant K_hold_cursor_avtun --purge cursor --limit 1000 --duration 240 --autovac tuned --hold-at 60 --hold-for 120
run --variant J_hold_none_avtun --purge none --duration 240 --autovac tuned --hold-at 60 --hold-for 120
psql "$DSN" -qc "ALTER SYSTEM SET autovacuum_naptime = '10s'" -c "SELECT pg_reload_conf()"
run --variant H_none_avtun_nap10   --purge none  --duration 120 --autovac tuned
run --variant I_idx1000_avtun_nap10 --purge index --limit 1000 --duration 120 --autovac tuned
psql "$DSN" -qc "ALTER SYSTEM RESET autovacuum_naptime" -c "SELECT pg_reload_conf()"
