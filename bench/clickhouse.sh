#!/usr/bin/env bash
# Benchmark: insert throughput into a real ClickHouse (Debian's 18.16) for gold-shaped rows.
#   bench/clickhouse.sh [ROWS] [--release]   default 1,000,000 rows shaped like gold `sessions`
# Runs the ignored test `bench_insert_throughput` (host/tests/clickhouse.rs), by default in the
# test profile (dependencies optimised, the host at opt-level 1; `--release` for a release
# build, which takes ~35 min cold here):
# it starts its own server (tests/services/clickhouse, name `ch-bench`, port 18460), inserts
# the rows in 100,000-row epochs through the sink (RowBinary, gzip and plain), and, as the
# baseline in the same run, the same rows from a TabSeparated file with `clickhouse-client`
# (the native protocol). Prints the median of 3 rounds as rows/s and the ratio to the client;
# writes $SLUICE_CACHE/bench/clickhouse.csv.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$SLUICE_ROOT"
bash tests/services/clickhouse/clickhouse.sh install >/dev/null
mkdir -p "$SLUICE_CACHE/bench"
rows=1000000; profile=()
for arg in "$@"; do
  case "$arg" in
    --release) profile=(--release) ;;
    *) rows="$arg" ;;
  esac
done
SLUICE_BENCH_ROWS="$rows" SLUICE_BENCH_CSV="$SLUICE_CACHE/bench/clickhouse.csv" \
  cargo test "${profile[@]}" -p sluice --test clickhouse -- --ignored --nocapture bench_insert_throughput
