#!/usr/bin/env bash
# Installs what building Sluice needs, idempotently: the Rust toolchain's wasm target and
# components. Safe to run again; does nothing that is already done.
set -euo pipefail
. "$(dirname "$0")/env.sh"
if ! command -v cargo >/dev/null; then
  echo "cargo not found: install Rust with rustup (https://rustup.rs) and run this again" >&2
  exit 1
fi
installed=$(rustup target list --installed)
grep -qx wasm32-wasip2 <<<"$installed" || rustup target add wasm32-wasip2
components=$(rustup component list --installed)
for c in rustfmt clippy; do
  grep -q "^$c" <<<"$components" || rustup component add "$c"
done
mkdir -p "$SLUICE_CACHE"
