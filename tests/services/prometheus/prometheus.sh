#!/usr/bin/env bash
# A Prometheus server on 127.0.0.1 from Debian's prometheus package, scraping a Sluice host
# every second with the alert rules of dashboards/alerts.yml loaded. Its own config and data
# (the package's system service is not used). Idempotent: `start` on a running server returns.
#
#   prometheus.sh install                          apt-get install prometheus (promtool too)
#   prometheus.sh start [NAME] [PORT] [TARGET]     scrape TARGET (default 127.0.0.1:9464)
#   prometheus.sh stop  [NAME]                     stop it (data kept)
#   prometheus.sh wipe  [NAME]                     stop it and delete its data
#   prometheus.sh status [NAME]                    exit 0 when it is running
#
# NAME defaults to `prometheus`, PORT to 19090. State lives in $SLUICE_CACHE/services/NAME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/env.sh"
. "$here/../pidfile.sh"

command=${1:-}
name=${2:-prometheus}
port=${3:-19090}
target=${4:-127.0.0.1:9464}
home="$SLUICE_CACHE/services/$name"
pidfile="$home/pid"

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  mkdir -p "$SLUICE_CACHE"
  exec 9>"$SLUICE_CACHE/prometheus-install.lock"
  flock 9
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  # Without recommends: no node exporter. The post-install may fail to start the system
  # service; this script runs its own server.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >&2
}

answers() {
  curl -sf "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1
}

start() {
  install
  mkdir -p "$home/data"
  exec 8>"$home/lock"
  flock 8
  if running; then
    echo "prometheus $name already running on 127.0.0.1:$port"
    return 0
  fi
  cp "$SLUICE_ROOT/dashboards/alerts.yml" "$home/alerts.yml"
  cat >"$home/prometheus.yml" <<CONFIG
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files: [alerts.yml]
scrape_configs:
  - job_name: sluice
    static_configs:
      - targets: ['$target']
CONFIG
  setsid prometheus --config.file="$home/prometheus.yml" --storage.tsdb.path="$home/data" \
    --web.listen-address="127.0.0.1:$port" >"$home/server.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_until_answers 60 "prometheus $name on 127.0.0.1:$port, scraping $target," "$home/server.log"
}

case "$command" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  wipe) stop; rm -rf "$home" ;;
  status) running ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
