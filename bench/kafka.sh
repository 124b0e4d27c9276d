#!/usr/bin/env bash
# Benchmark: consumption from a real Kafka broker into bronze, with the producer in the same run.
#   bench/kafka.sh [EVENTS]      release build, default 1,000,000 events
#   bench/kafka.sh --quick [N]   the test build, default 200,000 events
# Starts its own broker (tests/services/kafka, name `kafka-bench`, port 19190), produces EVENTS
# generated events (`sluice gen --to kafka://`, 4 partitions per topic), then drains them into
# bronze (JSON → Arrow → zstd Parquet, partitioned by date and hour), and, as a baseline in the
# same run, the same events from the built-in generator into bronze. Prints events/s and
# events/s per core; appends a row to $SLUICE_CACHE/bench/kafka.csv. The consume time includes
# joining the consumer group (about 3 s here), so small runs understate the steady rate.
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
bin="$CARGO_TARGET_DIR/$profile/sluice"
work=$(mktemp -d)
broker=tests/services/kafka/kafka.sh
trap 'bash $broker wipe kafka-bench >/dev/null; rm -rf "$work"' EXIT
bash $broker wipe kafka-bench >/dev/null
bash $broker start kafka-bench 19190 >/dev/null
cores=$(nproc)
idle_ms=2000

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.3f", b - a }'; }
rate() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%d", n / s }'; }

start=$(now)
"$bin" gen --events "$events" --to kafka://127.0.0.1:19190 >/dev/null
produce_s=$(elapsed "$start")

cat > "$work/kafka.yaml" <<EOF
name: bench
source:
  kafka:
    brokers: 127.0.0.1:19190
    topics: [listen_events, page_view_events, auth_events, status_change_events]
    group: bench
    exit_when_idle_ms: $idle_ms
lake:
  uri: file://$work/kafka-lake
bronze:
  partition_by: [date, hour]
EOF
start=$(now)
"$bin" run --quiet "$work/kafka.yaml" > "$work/kafka.txt"
# The run ends idle_ms after the last message: that wait is not consumption.
consume_s=$(awk -v s="$(elapsed "$start")" -v i="$idle_ms" 'BEGIN { printf "%.3f", s - i / 1000 }')

cat > "$work/gen.yaml" <<EOF
name: bench
source:
  generator: {events: $events}
lake:
  uri: file://$work/gen-lake
bronze:
  partition_by: [date, hour]
EOF
start=$(now)
"$bin" run --quiet "$work/gen.yaml" > "$work/gen.txt"
gen_s=$(elapsed "$start")

consume_eps=$(rate "$events" "$consume_s")
gen_eps=$(rate "$events" "$gen_s")
echo "sluice kafka bench ($profile build, $events events, $cores cores, broker on the same machine)"
cat "$work/kafka.txt"
printf 'produce (sluice gen --to kafka, lz4, idempotent):  %s events/s\n' "$(rate "$events" "$produce_s")"
printf 'consume (kafka -> JSON -> Arrow -> bronze):        %s events/s, %s events/s per core, %s s\n' "$consume_eps" "$((consume_eps / cores))" "$consume_s"
printf 'baseline (generator -> JSON -> Arrow -> bronze):   %s events/s; kafka/baseline = %s\n' "$gen_eps" "$(awk -v a="$consume_eps" -v b="$gen_eps" 'BEGIN { printf "%.2f", a / b }')"
mkdir -p "$SLUICE_CACHE/bench"
csv="$SLUICE_CACHE/bench/kafka.csv"
[ -f "$csv" ] || echo "date,profile,events,cores,produce_s,consume_s,consume_events_per_s,consume_events_per_s_per_core,baseline_events_per_s" > "$csv"
echo "$(date -u +%FT%TZ),$profile,$events,$cores,$produce_s,$consume_s,$consume_eps,$((consume_eps / cores)),$gen_eps" >> "$csv"
echo "results appended to $csv"
