#!/usr/bin/env bash
# A ClickHouse server on 127.0.0.1 from Debian's clickhouse-server package, with a config and
# data folder of its own (the package's system service is not used). Idempotent: `start` on a
# running server returns at once.
#
#   clickhouse.sh install                 apt-get install clickhouse-server clickhouse-client
#   clickhouse.sh start  [NAME] [PORT]    write its config, start, wait until it answers
#   clickhouse.sh stop   [NAME]           stop it (data kept: `start` resumes with the same tables)
#   clickhouse.sh kill   [NAME]           SIGKILL it at once, as a crash or a pulled cable would
#   clickhouse.sh wipe   [NAME]           stop it and delete its data
#   clickhouse.sh status [NAME]           exit 0 when it is running
#
# NAME (default `clickhouse`) lets tests run servers of their own; PORT (default 18123) is the
# HTTP port and PORT+1 the native one. State lives in $SLUICE_CACHE/services/NAME. Users:
# `default` (no password) and `sluice` (password `sluice-test-secret`), loopback only.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/env.sh"
. "$here/../pidfile.sh"

command=${1:-}
name=${2:-clickhouse}
port=${3:-18123}
home="$SLUICE_CACHE/services/$name"
pidfile="$home/pid"
log="$home/server.log"

install() {
  command -v clickhouse-server >/dev/null && command -v clickhouse-client >/dev/null && return 0
  mkdir -p "$SLUICE_CACHE"
  exec 9>"$SLUICE_CACHE/clickhouse-install.lock"
  flock 9
  command -v clickhouse-server >/dev/null && command -v clickhouse-client >/dev/null && return 0
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  # The package's post-install tries to start a system service; policy-rc.d may refuse that,
  # which is fine: this script runs its own server.
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq clickhouse-server clickhouse-client >&2
}

answers() {
  curl -sf "http://127.0.0.1:$port/?query=SELECT%201" 2>/dev/null | grep -q '^1$'
}

write_config() {
  mkdir -p "$home/data" "$home/tmp" "$home/user_files" "$home/format_schemas"
  cat >"$home/config.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>information</level>
        <log>$home/server.log</log>
        <errorlog>$home/server.err.log</errorlog>
        <size>20M</size>
        <count>2</count>
    </logger>
    <http_port>$port</http_port>
    <tcp_port>$((port + 1))</tcp_port>
    <listen_host>127.0.0.1</listen_host>
    <path>$home/data/</path>
    <tmp_path>$home/tmp/</tmp_path>
    <user_files_path>$home/user_files/</user_files_path>
    <format_schema_path>$home/format_schemas/</format_schema_path>
    <users_config>$home/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <uncompressed_cache_size>268435456</uncompressed_cache_size>
    <max_concurrent_queries>64</max_concurrent_queries>
    <keep_alive_timeout>10</keep_alive_timeout>
</yandex>
EOF
  cat >"$home/users.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <load_balancing>random</load_balancing>
        </default>
    </profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
        <sluice>
            <password>sluice-test-secret</password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </sluice>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
EOF
}

start() {
  install
  mkdir -p "$home"
  exec 8>"$home/lock"
  flock 8
  if running; then
    echo "clickhouse $name already running on 127.0.0.1:$port"
    return 0
  fi
  write_config
  : >"$log"
  setsid clickhouse-server --config-file="$home/config.xml" >>"$home/stdout.log" 2>&1 </dev/null 8>&- &
  echo $! >"$pidfile"
  wait_until_answers 60 "clickhouse $name on 127.0.0.1:$port" "$log" "$home/stdout.log" "$home/server.err.log"
}


case "$command" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  kill) crash ;;
  wipe) stop; rm -rf "$home" ;;
  status) running ;;
  *) sed -n '2,15p' "$0" >&2; exit 2 ;;
esac
