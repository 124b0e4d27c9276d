#!/usr/bin/env bash
# Sluice vs DuckDB vs Apache Spark (pyspark, local[2]) on the same jobs, same machine, one run:
#   clean:  EventSim JSON lines → clean rules → silver, zstd Parquet partitioned by date;
#   silver: the same with bronze (the raw records as Parquet) written too;
#   gold:   `silver`, then sessions and the seven KPI tables from silver
#           (JOBS=clean,gold runs those two, and so on).
#   bench/compare.sh [EVENTS]       release build, default 1,000,000 events; all three engines,
#                                   median of 3 runs each (REPEAT=N to change)
#   bench/compare.sh --quick        the test build, 100,000 events, Sluice and DuckDB, one run
#                                   (what CI prints; never fails on timing)
# Checks that the engines wrote the same rows per layer and topic and the same gold values;
# prints wall time, events/s, per core, CPU time and peak RSS, and the ratios; writes
# compare.csv, compare-<N>.png and machine.txt to bench/results/ (--quick: $SLUICE_CACHE/bench/quick/).
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$SLUICE_ROOT"
engines=sluice,duckdb,spark
out=bench/results
if [ "${1:-}" = "--quick" ]; then
  events=100000; profile=debug; engines=sluice,duckdb; out="$SLUICE_CACHE/bench/quick"; repeat=1
else
  events="${1:-1000000}"; profile=release; repeat="${REPEAT:-3}"
  bash scripts/build-plugins.sh >/dev/null
  cargo build --release -p sluice
fi
venv="$SLUICE_CACHE/bench-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
packages=(duckdb==1.4.2 matplotlib==3.11.2)
if [[ $engines == *spark* ]]; then
  packages+=(pyspark==4.1.1)
  command -v java >/dev/null || { echo "Spark needs Java 17+" >&2; exit 1; }
fi
"$venv/bin/pip" install --quiet "${packages[@]}"
"$venv/bin/python" bench/compare.py --events "$events" --engines "$engines" --repeat "$repeat" \
  --jobs "${JOBS:-clean,silver,gold}" --sluice "$CARGO_TARGET_DIR/$profile/sluice" --plugins "$SLUICE_PLUGIN_DIR" --out "$out"
