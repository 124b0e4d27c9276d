#!/usr/bin/env bash
# Headless Chromium from Debian's chromium package, for the status page's rendering test.
#
#   chromium.sh install                   apt-get install chromium (idempotent)
#   chromium.sh screenshot URL PNG        render URL at 1280x900 into PNG
#   chromium.sh dom URL                   print the DOM after rendering
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/env.sh"

install() {
  command -v chromium >/dev/null && return 0
  mkdir -p "$SLUICE_CACHE"
  exec 9>"$SLUICE_CACHE/chromium-install.lock"
  flock 9
  command -v chromium >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >&2
}

# A profile of its own per call; no GPU, sandbox or network beyond the page (root in CI
# needs --no-sandbox).
headless() {
  local profile
  profile=$(mktemp -d)
  trap 'rm -rf "$profile"' RETURN
  chromium --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
    --disable-background-networking --disable-extensions --no-first-run \
    --hide-scrollbars --user-data-dir="$profile" "$@" 2>/dev/null
}

case "${1:-}" in
  install) install ;;
  screenshot) install; headless --window-size=1280,900 --screenshot="$3" "$2" >/dev/null ;;
  dom) install; headless --dump-dom "$2" ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
