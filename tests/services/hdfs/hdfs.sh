#!/usr/bin/env bash
# A single-process HDFS (Hadoop's MiniDFSCluster: one NameNode, one DataNode) on 127.0.0.1, from
# the jars on Maven Central. Idempotent: `start` on a running cluster returns at once.
#
#   hdfs.sh install                   fetch the jars into $SLUICE_CACHE/hdfs, compile MiniHdfs.java
#   hdfs.sh start    [NAME] [PORT]    start (format if new), wait until it answers
#   hdfs.sh stop     [NAME]           shut it down (data kept: `start` resumes it)
#   hdfs.sh wipe     [NAME]           stop it and delete its data
#   hdfs.sh status   [NAME]           exit 0 when it is running
#   hdfs.sh namenode-stop  [NAME]     stop only the NameNode (clients see HDFS down)
#   hdfs.sh namenode-start [NAME]     restart it on the same port with the same metadata
#
# NAME (default `hdfs`) lets tests run clusters of their own; PORT (default 19820) is the
# NameNode's RPC port (hdfs://127.0.0.1:PORT); DataNode and web ports are ephemeral, on
# loopback. State lives in $SLUICE_CACHE/services/NAME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/env.sh"
. "$here/../pidfile.sh"

command=${1:-}
name=${2:-hdfs}
port=${3:-19820}
lib="$SLUICE_CACHE/hdfs/lib"
classes="$SLUICE_CACHE/hdfs/classes"
home="$SLUICE_CACHE/services/$name"
pidfile="$home/pid"
log="$home/hdfs.log"

install() {
  if [ -f "$lib/.complete" ] && [ "$classes/MiniHdfs.class" -nt "$here/MiniHdfs.java" ]; then
    return 0
  fi
  mkdir -p "$SLUICE_CACHE/hdfs"
  exec 9>"$SLUICE_CACHE/hdfs/install.lock"
  flock 9
  if [ ! -f "$lib/.complete" ]; then
    rm -rf "$lib"
    mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
      -DoutputDirectory="$lib" -DincludeScope=runtime >&2
    touch "$lib/.complete"
  fi
  mkdir -p "$classes"
  javac -nowarn -d "$classes" -cp "$lib/*" "$here/MiniHdfs.java" >&2
}

# Hadoop on Java 17 reflects into these JDK internals.
java_opens=(
  --add-opens=java.base/java.lang=ALL-UNNAMED
  --add-opens=java.base/java.lang.reflect=ALL-UNNAMED
  --add-opens=java.base/java.io=ALL-UNNAMED
  --add-opens=java.base/java.net=ALL-UNNAMED
  --add-opens=java.base/java.nio=ALL-UNNAMED
  --add-opens=java.base/java.util=ALL-UNNAMED
  --add-opens=java.base/java.util.concurrent=ALL-UNNAMED
  --add-opens=java.base/sun.nio.ch=ALL-UNNAMED
  --add-exports=java.base/sun.net.dns=ALL-UNNAMED
  --add-exports=java.base/sun.net.util=ALL-UNNAMED
)

# Waits until HOME/state says $1 (or the process dies).
await() {
  for _ in $(seq 1 240); do
    [ "$(cat "$home/state" 2>/dev/null)" = "$1" ] && return 0
    if ! running; then
      tail -40 "$log" >&2
      echo "hdfs $name exited (log: $log)" >&2
      return 1
    fi
    sleep 0.25
  done
  tail -40 "$log" >&2
  echo "hdfs $name did not reach '$1' within 60 s (log: $log)" >&2
  return 1
}

start() {
  install
  mkdir -p "$home"
  exec 8>"$home/lock"
  flock 8
  if running; then
    echo "hdfs $name already running on hdfs://127.0.0.1:$(cat "$home/port")"
    return 0
  fi
  rm -f "$home/state" "$home/command"
  echo "$port" >"$home/port"
  : >"$log"
  setsid java -Xms128m -Xmx768m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true \
    "${java_opens[@]}" -cp "$classes:$lib/*" MiniHdfs "$port" "$home" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  await ready
  echo "hdfs $name running on hdfs://127.0.0.1:$port"
}

control() {
  running || { echo "hdfs $name is not running" >&2; return 1; }
  echo "$1" >"$home/command.tmp"
  mv "$home/command.tmp" "$home/command"
  await "$2"
}

case "$command" in
  install) install ;;
  start) start ;;
  stop) running && control shutdown stopped || true; stop ;;
  wipe) running && control shutdown stopped || true; stop; rm -rf "$home" ;;
  status) running ;;
  namenode-stop) control stop-namenode namenode-stopped ;;
  namenode-start) control start-namenode ready ;;
  *) sed -n '2,17p' "$0" >&2; exit 2 ;;
esac
