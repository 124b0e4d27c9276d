#!/usr/bin/env bash
# Benchmark: lake writes to HDFS vs to a local folder, same run, same pipeline.
#   bench/hdfs.sh [EVENTS]           release build, default 1,000,000 events
#   bench/hdfs.sh --quick [EVENTS]   the test build, default 200,000 events
# Starts its own MiniDFSCluster (tests/services/hdfs, name `hdfs-bench`, NameNode port 19890),
# runs generator → bronze (date, hour) → clean → silver (date) into a local folder and into
# hdfs://127.0.0.1:19890/bench, each 3 times, and prints the medians as events/s and MiB/s of
# Parquet written, and the HDFS/local ratio; appends to $SLUICE_CACHE/bench/hdfs.csv. The
# NameNode and DataNode share the 2 cores with Sluice.
set -euo pipefail
. "$(dirname "$0")/../scripts/env.sh"
cd "$SLUICE_ROOT"
if [ "${1:-}" = "--quick" ]; then
  events="${2:-200000}"; profile=debug
  cargo build -p sluice
else
  events="${1:-1000000}"; profile=release
  cargo build --release -p sluice
fi
bash scripts/build-plugins.sh >/dev/null
bin="$CARGO_TARGET_DIR/$profile/sluice"
work=$(mktemp -d)
hdfs=tests/services/hdfs/hdfs.sh
trap 'bash $hdfs wipe hdfs-bench >/dev/null; rm -rf "$work"' EXIT
bash $hdfs wipe hdfs-bench >/dev/null
bash $hdfs start hdfs-bench 19890 >/dev/null
cores=$(nproc)

pipeline() { # NAME LAKE_URI
  cat > "$work/$1.yaml" <<EOF
name: bench
source:
  generator: {events: $events}
lake:
  uri: $2
bronze:
  partition_by: [date, hour]
stages:
  - name: clean
    plugin: $SLUICE_PLUGIN_DIR/clean.wasm
    layer: silver
    partition_by: [date]
EOF
}

now() { date +%s.%N; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
declare -A seconds
for round in 1 2 3; do
  for target in local hdfs; do
    if [ "$target" = local ]; then
      rm -rf "$work/lake"; uri="file://$work/lake"
    else
      uri="hdfs://127.0.0.1:19890/bench/round-$round"
    fi
    pipeline "$target" "$uri"
    start=$(now)
    "$bin" run --quiet "$work/$target.yaml" > "$work/$target.txt"
    seconds[$target]+="$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }') "
  done
done
bytes=$(du -sb --exclude=_tmp "$work/lake" | cut -f1)
echo "sluice hdfs bench ($profile build, $events events, $cores cores, MiniDFSCluster on the same machine)"
mkdir -p "$SLUICE_CACHE/bench"
csv="$SLUICE_CACHE/bench/hdfs.csv"
[ -f "$csv" ] || echo "date,profile,events,cores,target,median_s,events_per_s,mib_per_s" > "$csv"
for target in local hdfs; do
  s=$(echo "${seconds[$target]}" | tr ' ' '\n' | grep . | median)
  eps=$(awk -v n="$events" -v s="$s" 'BEGIN { printf "%d", n / s }')
  mibs=$(awk -v b="$bytes" -v s="$s" 'BEGIN { printf "%.1f", b / 1048576 / s }')
  printf '%-6s %8s s  %9s events/s  %6s MiB/s of Parquet (runs: %s)\n' "$target" "$s" "$eps" "$mibs" "${seconds[$target]}"
  echo "$(date -u +%FT%TZ),$profile,$events,$cores,$target,$s,$eps,$mibs" >> "$csv"
  eval "eps_$target=$eps"
done
printf 'hdfs/local = %s\n' "$(awk -v a="$eps_hdfs" -v b="$eps_local" 'BEGIN { printf "%.2f", a / b }')"
echo "results appended to $csv"
