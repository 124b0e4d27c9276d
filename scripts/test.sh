#!/usr/bin/env bash
# README command 2 (and CI): set up and run every check and test.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
bash scripts/setup.sh

echo "== format, lints and the test build"
cargo fmt --all -- --check
# `cargo clippy` is `cargo check` with clippy-driver compiling the workspace's own crates. Here
# clippy-driver compiles them for the test build itself, with the same lints (-D warnings), so
# the dependencies are built once instead of once checked and once built: on a cold run that
# check was a fifth of the time.
lints=(env RUSTC_WORKSPACE_WRAPPER="$(rustup which clippy-driver)"
       CLIPPY_ARGS="-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__")
"${lints[@]}" cargo test --workspace --all-targets --no-run

echo "== plugins for wasm32-wasip2"
bash scripts/build-plugins.sh
# The same contract from another language (JavaScript via componentize-js, from npm): only the
# tests need it, so the quickstart does not pay for it.
bash plugins/paid-only-js/build.sh "$SLUICE_PLUGIN_DIR"

echo "== services for the end-to-end tests (each test starts its own on 127.0.0.1)"
for tool in java javac mvn; do
  command -v "$tool" >/dev/null || { echo "$tool is needed for the Kafka and HDFS tests (JDK 17 + Maven)" >&2; exit 1; }
done
bash tests/services/kafka/kafka.sh install
bash tests/services/clickhouse/clickhouse.sh install
bash tests/services/postgres/postgres.sh install
bash tests/services/hdfs/hdfs.sh install
bash tests/services/prometheus/prometheus.sh install
bash tests/services/chromium/chromium.sh install
# `docker-compose config` validates docker-compose.yml (host/tests/deploy.rs); no engine runs.
if ! command -v docker-compose >/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

echo "== a virtualenv for the independent readers (pyarrow, DuckDB)"
venv="$SLUICE_CACHE/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet -r tests/interop/requirements.txt

echo "== Rust tests (unit, SDK harness, runtime, end to end)"
"${lints[@]}" cargo test --workspace --all-targets

echo "== independent readers over lakes the binary wrote: pyarrow, DuckDB (KPIs vs SQL over silver)"
SLUICE_BIN="$CARGO_TARGET_DIR/debug/sluice" "$venv/bin/python" -m pytest -q tests/interop

echo "== quick benchmark (figures for the log; never fails on timing)"
bash bench/run.sh --quick
bash bench/compare.sh --quick
