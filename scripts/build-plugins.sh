#!/usr/bin/env bash
# Builds the first-party plugins (and the test plugins) for wasm32-wasip2 into target/plugins/.
set -euo pipefail
. "$(dirname "$0")/env.sh"
cd "$SLUICE_ROOT"
rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
plugins=(clean paid-only sessionize kpis faulty)
# A second build of `clean` that reports version 2.0.0: the hot-swap tests swap between the two.
SLUICE_PLUGIN_VERSION=2.0.0 cargo build --profile plugin --target wasm32-wasip2 -p clean
mkdir -p "$SLUICE_PLUGIN_DIR"
cp "$CARGO_TARGET_DIR/wasm32-wasip2/plugin/clean.wasm" "$SLUICE_PLUGIN_DIR/clean_v2.wasm"
cargo build --profile plugin --target wasm32-wasip2 $(printf -- '-p %s ' "${plugins[@]}")
mkdir -p "$SLUICE_PLUGIN_DIR"
for p in "${plugins[@]}"; do
  artifact="${p//-/_}.wasm"   # cargo names cdylib artifacts with underscores
  cp "$CARGO_TARGET_DIR/wasm32-wasip2/plugin/$artifact" "$SLUICE_PLUGIN_DIR/$artifact"
done
ls -l "$SLUICE_PLUGIN_DIR"
