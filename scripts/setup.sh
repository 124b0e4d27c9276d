#!/usr/bin/env bash
# Installs what building Sluice needs, idempotently: the Rust toolchain's wasm target and
# components, and the Debian packages librdkafka's build needs (cmake; curl's headers, for a
# build-config quirk — curl is not linked). Safe to run again; does nothing already done.
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
missing=()
command -v cmake >/dev/null || missing+=(cmake)
[ -f /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -f /usr/include/curl/curl.h ] || missing+=(libcurl4-openssl-dev)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p "$SLUICE_CACHE"
