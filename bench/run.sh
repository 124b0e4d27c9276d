#!/usr/bin/env bash
# Benchmark: the quickstart chain (generator → JSON → Arrow → bronze → clean.wasm → silver →
# sessionize.wasm → kpis.wasm → gold, zstd Parquet), no servers.
#   bench/run.sh [EVENTS]     release build, default 1,000,000 events
#   bench/run.sh --quick      the test build, 200,000 events: figures for the CI log only
# Prints events/s and events/s per core, with a baseline from the same run (the generator
# alone writing JSON lines), and appends a row to $SLUICE_CACHE/bench/results.csv.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$SLUICE_ROOT"
if [ "${1:-}" = "--quick" ]; then
  events=200000; profile=debug
else
  events="${1:-1000000}"; profile=release
  bash scripts/build-plugins.sh >/dev/null
  cargo build --release -p sluice
fi
bin="$CARGO_TARGET_DIR/$profile/sluice"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
cores=$(nproc)

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }

start=$(now)
"$bin" gen --events "$events" --out "$work/gen" >/dev/null
gen_s=$(elapsed "$start")

timer=()
[ -x /usr/bin/time ] && timer=(/usr/bin/time -f %M -o "$work/rss")
start=$(now)
SLUICE_LAKE="file://$work/lake" SLUICE_EVENTS="$events" "${timer[@]}" "$bin" run --quiet pipelines/quickstart.yaml > "$work/summary.txt"
run_s=$(elapsed "$start")
peak_kb=$(cat "$work/rss" 2>/dev/null || true)

eps=$(awk -v n="$events" -v s="$run_s" 'BEGIN { printf "%d", n / s }')
gen_eps=$(awk -v n="$events" -v s="$gen_s" 'BEGIN { printf "%d", n / s }')
lake_mb=$(du -sm "$work/lake" | cut -f1)
echo "sluice bench ($profile build, $events events, $cores cores, $(uname -m))"
cat "$work/summary.txt"
printf 'pipeline (quickstart chain: gen -> JSON -> Arrow -> bronze -> clean -> silver -> sessionize -> kpis -> gold, zstd Parquet): %s events/s, %s events/s per core, %s s wall\n' "$eps" "$((eps / cores))" "$run_s"
printf 'baseline (generator -> JSON lines only):                       %s events/s; pipeline/baseline = %s\n' "$gen_eps" "$(awk -v a="$eps" -v b="$gen_eps" 'BEGIN { printf "%.2f", a / b }')"
echo "peak RSS: ${peak_kb:-?} KiB; lake size: ${lake_mb} MiB"
mkdir -p "$SLUICE_CACHE/bench"
csv="$SLUICE_CACHE/bench/results.csv"
[ -f "$csv" ] || echo "date,profile,events,cores,pipeline_s,events_per_s,events_per_s_per_core,baseline_gen_events_per_s,peak_rss_kb" > "$csv"
echo "$(date -u +%FT%TZ),$profile,$events,$cores,$run_s,$eps,$((eps / cores)),$gen_eps,${peak_kb:-}" >> "$csv"
echo "results appended to $csv"
