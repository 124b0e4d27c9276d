#!/usr/bin/env bash
# README command 1: set up, build, and run the embedded quickstart (generator → bronze →
# clean.wasm → silver in ./lake; no servers). Extra arguments go to `sluice run`.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
bash scripts/setup.sh
bash scripts/build-plugins.sh >/dev/null
cargo build -p sluice
if [ -d lake ] && [ -z "${SLUICE_LAKE:-}" ]; then
  echo "removing the previous quickstart lake (./lake) so the run starts from the first event"
  rm -rf lake
fi
"$CARGO_TARGET_DIR/debug/sluice" run pipelines/quickstart.yaml "$@"
echo
echo "The lake is in ${SLUICE_LAKE:-./lake}: bronze/, silver/, _rejects/ (dead letters), _commits/."
