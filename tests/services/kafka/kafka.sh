#!/usr/bin/env bash
# A single-node Apache Kafka (KRaft: broker and controller in one JVM) on 127.0.0.1, from the
# broker jars on Maven Central. Idempotent: `start` on a running broker returns at once.
#
#   kafka.sh install                 fetch the jars into $SLUICE_CACHE/kafka/lib
#   kafka.sh start  [NAME] [PORT]    format storage if new, start, wait until it answers
#   kafka.sh stop   [NAME]           stop it (data kept: `start` resumes the same log)
#   kafka.sh wipe   [NAME]           stop it and delete its data
#   kafka.sh status [NAME]           exit 0 when it is running
#
# NAME (default `kafka`) lets tests run brokers of their own; PORT defaults to 19092 and the
# controller listens on PORT+1. State lives in $SLUICE_CACHE/services/NAME.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/../../../scripts/env.sh"
. "$here/../pidfile.sh"

command=${1:-}
name=${2:-kafka}
port=${3:-19092}
lib="$SLUICE_CACHE/kafka/lib"
home="$SLUICE_CACHE/services/$name"
pidfile="$home/pid"
log="$home/broker.log"

install() {
  [ -f "$lib/.complete" ] && return 0
  mkdir -p "$SLUICE_CACHE/kafka"
  # One installer at a time: tests may start several brokers at once.
  exec 9>"$SLUICE_CACHE/kafka/install.lock"
  flock 9
  [ -f "$lib/.complete" ] && return 0
  rm -rf "$lib"
  mvn -q -B -f "$here/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$lib" -DincludeScope=runtime >&2
  touch "$lib/.complete"
}

java_run() {
  java -Xms128m -Xmx512m -XX:+UseSerialGC -Djava.net.preferIPv4Stack=true -cp "$lib/*" "$@"
}

start() {
  install
  mkdir -p "$home"
  exec 8>"$home/lock"
  flock 8
  if running; then
    echo "kafka $name already running on 127.0.0.1:$(cat "$home/port")"
    return 0
  fi
  if [ -f "$home/port" ] && [ "$(cat "$home/port")" != "$port" ]; then
    echo "kafka $name was formatted for port $(cat "$home/port"); wipe it first" >&2
    return 1
  fi
  cat >"$home/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$((port + 1))
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$home/data
num.partitions=4
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
  if [ ! -f "$home/data/meta.properties" ]; then
    local cluster
    cluster=$(java_run kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
    java_run kafka.tools.StorageTool format -t "$cluster" -c "$home/server.properties" \
      >"$home/format.log" 2>&1 || { cat "$home/format.log" >&2; return 1; }
    echo "$port" >"$home/port"
  fi
  : >"$log"
  setsid bash -c "exec java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.net.preferIPv4Stack=true \
    -cp '$lib/*' kafka.Kafka '$home/server.properties'" >>"$log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_until_answers 120 "kafka $name on 127.0.0.1:$port" "$log"
}


answers() {
  grep -q "Kafka Server started" "$log" 2>/dev/null
}

case "$command" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  wipe) stop; rm -rf "$home" ;;
  status) running ;;
  *) sed -n '2,12p' "$0" >&2; exit 2 ;;
esac
