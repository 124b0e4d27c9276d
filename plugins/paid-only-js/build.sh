#!/usr/bin/env bash
# Builds paid_only_js.wasm: bundles src/plugin.js with apache-arrow (esbuild), then turns the
# bundle into a component for sdk/wit's `plugin` world with componentize-js (the
# StarlingMonkey JS engine). The npm packages (exact versions in package.json) are installed
# into $SLUICE_CACHE/npm/paid-only-js, not into the checkout. There is no package-lock.json:
# npm 10 writes one here that `npm ci` refuses (other platforms' optional packages of jco are
# missing) and that `npm install` resolves without the top-level preview2-shim
# componentize-js needs.
#   plugins/paid-only-js/build.sh [OUT_DIR]     default: $SLUICE_PLUGIN_DIR
set -euo pipefail
. "$(dirname "$0")/../../scripts/env.sh"
here="$SLUICE_ROOT/plugins/paid-only-js"
out="${1:-$SLUICE_PLUGIN_DIR}"
work="$SLUICE_CACHE/npm/paid-only-js"
mkdir -p "$work" "$out"
target="$out/paid_only_js.wasm"
# Componentizing takes most of a minute: skip it when nothing it reads has changed.
if [ -f "$target" ] && [ -z "$(find "$here/src" "$here/package.json" "$SLUICE_ROOT/sdk/wit" "$0" -newer "$target" -print -quit)" ]; then
  echo "$target is up to date"
  exit 0
fi
command -v npm >/dev/null || { echo "paid-only-js needs Node.js and npm" >&2; exit 1; }
# installed.json is the package.json of the last install that succeeded.
if ! cmp -s "$here/package.json" "$work/installed.json"; then
  rm -rf "$work/node_modules" "$work/installed.json" "$work/package-lock.json"
  cp "$here/package.json" "$work/"
  (cd "$work" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
  cp "$here/package.json" "$work/installed.json"
fi
rm -rf "$work/src" && cp -r "$here/src" "$work/src"
cd "$work"
node_modules/.bin/esbuild src/plugin.js --bundle --format=esm --platform=neutral \
  --main-fields=module,main --log-level=warning --outfile=build/bundle.js
# No HTTP: the sandbox grants WASI without network.
node_modules/.bin/componentize-js build/bundle.js --wit "$SLUICE_ROOT/sdk/wit" \
  --world-name plugin --disable http fetch-event -o build/paid_only_js.wasm
cp build/paid_only_js.wasm "$target.partial"
mv "$target.partial" "$target"
echo "built $target"
