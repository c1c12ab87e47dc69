#!/usr/bin/env bash
# Throwaway single-node Apache Kafka (KRaft, broker+controller in one JVM) on
# 127.0.0.1 for tests and CI. The jars come from Maven Central via
# kafka/pom.xml, so nothing but Java 17 and Maven has to be installed.
#
#   scripts/kafka.sh up|down|status
#
# KAFKA_PORT (9092), KAFKA_CONTROLLER_PORT (KAFKA_PORT+1), KAFKA_DIR (<repo>/.kafka),
# KAFKA_LIBS ($KAFKA_DIR/libs), KAFKA_HEAP (-Xmx512m -Xms256m),
# KAFKA_JVM_OPTS (the lean flags below; the benchmarks give the JVM's normal JIT and GC),
# KAFKA_START_TIMEOUT (60 s), KAFKA_CLEAN=1 (down also deletes the data),
# KAFKA_PYTHON (python3; used for the readiness probe when it has aiokafka),
# KAFKA_EXTRA_CONFIG (a file of server properties appended to ours: later
# keys win, so it can add listeners, SASL users, an authorizer...).
# Everything else is keyed on KAFKA_PORT, so brokers on different ports can
# run side by side.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
POM=$ROOT/kafka/pom.xml
PORT=${KAFKA_PORT:-9092}
CPORT=${KAFKA_CONTROLLER_PORT:-$((PORT + 1))}
DIR=${KAFKA_DIR:-$ROOT/.kafka}
LIBS=${KAFKA_LIBS:-$DIR/libs}
HEAP=${KAFKA_HEAP:--Xmx512m -Xms256m}
TIMEOUT=${KAFKA_START_TIMEOUT:-60}
PY=${KAFKA_PYTHON:-python3}

DATA=$DIR/data-$PORT
PIDFILE=$DIR/broker-$PORT.pid
LOG=$DIR/broker-$PORT.log
CONF=$DIR/server-$PORT.properties
LOG4J=$DIR/log4j2.properties

# Lean flags: the broker idles in tests, so start-up time is what counts. They cap its speed (C1 only, serial
# GC): a benchmark sets KAFKA_JVM_OPTS (e.g. to -Djava.awt.headless=true alone) for the normal JIT.
read -ra JVM <<<"${KAFKA_JVM_OPTS:--XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Djava.awt.headless=true}"
read -ra HEAP_ARGS <<<"$HEAP"

say() { echo "kafka: $*"; }

# Is $1 a live Kafka broker? Checking the command line guards against a stale
# pid file whose pid was reused, and treats a zombie (empty cmdline) as gone.
is_broker() {
  grep -qaF kafka.Kafka "/proc/$1/cmdline" 2>/dev/null
}

running_pid() {
  local pid
  [[ -f $PIDFILE ]] || return 1
  pid=$(<"$PIDFILE")
  [[ $pid =~ ^[0-9]+$ ]] && is_broker "$pid" || return 1
  echo "$pid"
}

# Fetch the jars once per pom version: the stamp holds the pom's checksum, so
# a warm run neither downloads nor even starts maven.
fetch_libs() {
  local sum tmp
  sum=$(sha256sum "$POM" | cut -d' ' -f1)
  [[ -f $LIBS/.stamp && $(<"$LIBS/.stamp") == "$sum" ]] && return 0
  mkdir -p "$(dirname "$LIBS")"
  # Brokers started in parallel (e.g. several test sessions) share the libs.
  exec 9>"$LIBS.lock"
  flock 9
  if [[ ! -f $LIBS/.stamp || $(<"$LIBS/.stamp") != "$sum" ]]; then
    say "fetching broker jars into $LIBS"
    tmp=$(mktemp -d "$LIBS.tmp.XXXXXX")
    # Into a fresh dir, then swapped in: an interrupted fetch never looks
    # complete. Maven's output is kept for errors only (Debian's 3.8 prints
    # stray colour codes even with -q -B).
    if ! mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
      cat "$tmp.log" >&2
      rm -rf "$tmp" "$tmp.log"
      say "maven could not fetch the broker jars" >&2
      exit 1
    fi
    rm -f "$tmp.log"
    chmod 755 "$tmp" # mktemp made it private
    echo "$sum" >"$tmp/.stamp"
    rm -rf "$LIBS"
    mv "$tmp" "$LIBS"
  fi
  exec 9>&-
}

write_config() {
  mkdir -p "$DATA"
  cat >"$CONF" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.segment.bytes=1048576
num.network.threads=2
num.io.threads=2
EOF
  if [[ -n ${KAFKA_EXTRA_CONFIG:-} ]]; then
    cat "$KAFKA_EXTRA_CONFIG" >>"$CONF"
  fi
  # Shared by all brokers; written whole then renamed so a parallel start
  # never reads half a file. Console output goes to the per-port log.
  cat >"$LOG4J.$$" <<'EOF'
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = out
# the noisiest per-request/per-partition loggers
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
# each of the 4 "KafkaConfig values:" dumps is ~400 lines; see server-<port>.properties
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = WARN
EOF
  mv "$LOG4J.$$" "$LOG4J"
}

# A broker counts as ready once it answers a metadata request.
probe() {
  if "$PY" -c 'import aiokafka' 2>/dev/null; then
    "$PY" - "127.0.0.1:$PORT" <<'EOF' >/dev/null 2>&1
import asyncio, sys
from aiokafka.client import AIOKafkaClient

async def main():
    client = AIOKafkaClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
    try:
        await client.bootstrap()
        assert (await client.fetch_all_metadata()).brokers()
    finally:
        await client.close()

asyncio.run(main())
EOF
  elif command -v kcat >/dev/null; then
    kcat -L -m 3 -b "127.0.0.1:$PORT" >/dev/null 2>&1
  else
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null
  fi
}

# $1: pid to kill, or "" when no broker was started yet.
fail_start() {
  echo "kafka: $2; last lines of $LOG:" >&2
  tail -n 30 "$LOG" >&2 || true
  if [[ -n $1 ]]; then
    kill -KILL "$1" 2>/dev/null || true
    rm -f "$PIDFILE"
  fi
  exit 1
}

up() {
  local pid cid deadline
  if pid=$(running_pid); then
    say "already running on 127.0.0.1:$PORT (pid $pid)"
    return 0
  fi
  fetch_libs
  write_config
  : >"$LOG"
  if [[ ! -f $DATA/meta.properties ]]; then
    # A cluster id is 16 random bytes in url-safe base64; Kafka itself avoids
    # a leading '-' because command-line parsers take it for an option.
    cid=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
    cid=A${cid:1}
    java "${JVM[@]}" -Dlog4j2.configurationFile="$LOG4J" -cp "$LIBS/*" \
      kafka.tools.StorageTool format -t "$cid" -c "$CONF" >>"$LOG" 2>&1 ||
      fail_start "" "formatting $DATA failed"
  fi
  nohup java "${HEAP_ARGS[@]}" "${JVM[@]}" -Dlog4j2.configurationFile="$LOG4J" \
    -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$LOG" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  deadline=$((SECONDS + TIMEOUT))
  # Grepping the log is cheap; the real metadata probe only runs after it.
  until grep -q 'Kafka Server started' "$LOG" && probe; do
    # kill -0, not is_broker: the child may not have exec'd java yet, and bash
    # reaps its own children, so no zombie lingers here.
    kill -0 "$pid" 2>/dev/null || fail_start "$pid" "broker exited during start-up"
    ((SECONDS < deadline)) || fail_start "$pid" "not ready after ${TIMEOUT}s"
    sleep 0.2
  done
  say "up on 127.0.0.1:$PORT (pid $pid)"
}

down() {
  local pid i
  if pid=$(running_pid); then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do # 20 s
      is_broker "$pid" || break
      sleep 0.2
    done
    if is_broker "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
    say "stopped 127.0.0.1:$PORT (pid $pid)"
  fi
  rm -f "$PIDFILE"
  if [[ ${KAFKA_CLEAN:-0} == 1 ]]; then
    rm -rf "$DATA"
  fi
}

status() {
  local pid
  if pid=$(running_pid); then
    say "running on 127.0.0.1:$PORT (pid $pid)"
  else
    say "stopped (127.0.0.1:$PORT)"
    exit 3
  fi
}

case ${1:-} in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
