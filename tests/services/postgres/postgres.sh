#!/usr/bin/env bash
# A PostgreSQL server on 127.0.0.1 from Debian's postgresql package, with a cluster of its own
# (initdb; the package's system service is not used). Idempotent: `start` on a running server
# returns at once.
#
#   postgres.sh install                 apt-get install postgresql
#   postgres.sh start  [NAME] [PORT]    initdb (first time), start, wait until it answers
#   postgres.sh stop   [NAME]           fast shutdown (data kept: `start` resumes with the same tables)
#   postgres.sh kill   [NAME]           immediate shutdown: every process quits at once, no
#                                       checkpoint, crash recovery on the next start
#   postgres.sh wipe   [NAME]           stop it and delete its data
#   postgres.sh status [NAME]           exit 0 when it is running
#
# NAME (default `postgres`) lets tests run servers of their own; PORT defaults to 18632.
# Database `sluice`, owned by user `sluice` (password `sluice-test-secret`, scram-sha-256 over
# TCP on 127.0.0.1 only). Pid in $SLUICE_CACHE/services/NAME; the cluster and its log there too,
# or under /var/tmp/sluice-postgres when run as root (the server runs as user `postgres`, which
# cannot enter root's home).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/env.sh"
. "$here/../pidfile.sh"

command=${1:-}
name=${2:-postgres}
port=${3:-18632}
home="$SLUICE_CACHE/services/$name"
pidfile="$home/pid"
log="$home/server.log"
if [ "$(id -u)" = 0 ]; then
  data="/var/tmp/sluice-postgres/$name"
  log="$data.log"
  as_server() { runuser -u postgres -- "$@"; }
else
  data="$home/data"
  as_server() { "$@"; }
fi

bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [ -x "$dir/initdb" ] && { echo "$dir"; return 0; }
  done
  return 1
}

install() {
  bindir >/dev/null && command -v psql >/dev/null && return 0
  mkdir -p "$SLUICE_CACHE"
  exec 9>"$SLUICE_CACHE/postgres-install.lock"
  flock 9
  bindir >/dev/null && command -v psql >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql >&2
}

answers() {
  PGPASSWORD=sluice-test-secret psql -h 127.0.0.1 -p "$port" -U sluice -d sluice -tAc 'SELECT 1' 2>/dev/null | grep -q '^1$'
}

init_cluster() {
  [ -f "$data/PG_VERSION" ] && return 0
  local bin
  bin=$(bindir)
  rm -rf "$data"
  mkdir -p "$data"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$(dirname "$data")"; fi
  local pwfile="$data.pw"
  echo sluice-test-secret >"$pwfile"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$pwfile"; fi
  as_server "$bin/initdb" -D "$data" -U sluice --pwfile="$pwfile" --auth-local=trust \
    --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >"$home/initdb.log" 2>&1 \
    || { cat "$home/initdb.log" >&2; return 1; }
  rm -f "$pwfile"
  cat >>"$data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$data'
fsync = on
max_connections = 50
shared_buffers = 64MB
timezone = 'UTC'
log_timezone = 'UTC'
CONF
}

start() {
  install
  mkdir -p "$home"
  exec 8>"$home/lock"
  flock 8
  if running; then
    echo "postgres $name already running on 127.0.0.1:$port"
    return 0
  fi
  init_cluster
  : >"$log"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$log"; fi
  # A previous immediate shutdown may have left the pid file; the postmaster checks it itself.
  as_server "$(bindir)/pg_ctl" -D "$data" -l "$log" -o "-p $port" -w -t 60 start >"$home/pg_ctl.log" 2>&1 8>&- \
    || { tail -n 40 "$log" "$home/pg_ctl.log" >&2; echo "postgres $name did not start" >&2; return 1; }
  head -1 "$data/postmaster.pid" >"$pidfile"
  as_server psql -h "$data" -p "$port" -U sluice -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'sluice'" | grep -q 1 \
    || as_server psql -h "$data" -p "$port" -U sluice -d postgres -qc 'CREATE DATABASE sluice' >/dev/null
  wait_until_answers 60 "postgres $name on 127.0.0.1:$port" "$log"
}

shutdown() {
  local mode=$1
  if running; then
    as_server "$(bindir)/pg_ctl" -D "$data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
  fi
  rm -f "$pidfile"
}

case "$command" in
  install) install ;;
  start) start ;;
  stop) shutdown fast ;;
  kill) shutdown immediate ;;
  wipe) shutdown immediate; rm -rf "$home" "$data" "$data.log" ;;
  status) running ;;
  *) sed -n '2,19p' "$0" >&2; exit 2 ;;
esac
