#!/usr/bin/env bash
# Run a real single-node Apache Kafka 4.1.1 broker (KRaft, broker+controller in
# one JVM) on 127.0.0.1 for segstream's integration tests. No Docker, no Kafka
# download site: the jars come from Maven Central via scripts/kafka-pom.xml.
#
#   kafka-broker.sh install                 resolve jars into the cache, print its path
#   kafka-broker.sh start --dir DIR --port PORT [--controller-port CPORT] [--sasl-port SPORT]
#       --sasl-port adds a SASL_PLAINTEXT listener (SCRAM-SHA-256) with the
#       user "segstream", password "segstream-secret" (tests of secure clusters)
#   kafka-broker.sh stop --dir DIR
#   kafka-broker.sh status --dir DIR        print 127.0.0.1:PORT, exit 1 if not running
#   kafka-broker.sh free-port               print a free TCP port on 127.0.0.1
#
# Env: SEGSTREAM_KAFKA_CACHE (default ~/.cache/segstream/kafka-4.1.1),
#      KAFKA_START_TIMEOUT (seconds, default 60),
#      KAFKA_JVM_PROFILE (test, the default; or throughput: the JVM settings
#      of Kafka's own kafka-server-start.sh, for benchmarks).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POM="$SCRIPT_DIR/kafka-pom.xml"
LOG4J="$SCRIPT_DIR/log4j2.properties"
CACHE="${SEGSTREAM_KAFKA_CACHE:-$HOME/.cache/segstream/kafka-4.1.1}"
LIBS="$CACHE/libs"
# Marker holds a hash of the pom: written only after a complete copy, so an
# interrupted download or a changed pom means "resolve again".
MARKER="$CACHE/libs.complete"
# C1-only JIT + serial GC: start-to-ready ~1.8 s instead of ~2.3 s (restart) and
# ~3.0 s instead of ~4.0 s (format + start) on 2 cores; a test broker needs no
# peak throughput. 512 MB heap is plenty for tests.
JVM_OPTS=(-Xmx512m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true "-Dlog4j2.configurationFile=$LOG4J")
# What a production broker runs (kafka-server-start.sh's heap and
# KAFKA_JVM_PERFORMANCE_OPTS): full JIT, G1 with short pauses. Latency
# benchmarks measure against this, not against the quick-start test JVM.
case "${KAFKA_JVM_PROFILE:-test}" in
  test) ;;
  throughput)
    JVM_OPTS=(-Xmx1g -Xms1g -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -XX:MaxInlineLevel=15
      -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true "-Dlog4j2.configurationFile=$LOG4J") ;;
  *) echo "kafka-broker.sh: error: KAFKA_JVM_PROFILE=$KAFKA_JVM_PROFILE: use test or throughput" >&2; exit 2 ;;
esac

die() { echo "kafka-broker.sh: error: $*" >&2; exit 1; }
say() { echo "kafka-broker.sh: $*" >&2; }

# Run apt-get as root, via sudo when we are not root.
apt_install() {
  command -v apt-get >/dev/null || die "$1 is missing and apt-get is not available; install $1 by hand"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "$1 is missing; run as root or install: apt-get install openjdk-17-jre-headless maven"
    sudo=(sudo)
  fi
  say "installing openjdk-17-jre-headless maven (needed: $1)"
  # shellcheck disable=SC2015  # either step failing means: die
  "${sudo[@]}" apt-get update -qq >&2 && "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq openjdk-17-jre-headless maven >&2 || die "apt-get install of java/maven failed"
}

# Major version of `java` on PATH ("17.0.15" -> 17, "1.8.0" -> 1), 0 if none.
java_major() {
  command -v java >/dev/null || { echo 0; return; }
  java -version 2>&1 | awk -F'"' '/version/ { split($2, v, "."); print v[1] + 0; exit }'
}

do_install() {
  [ "$(java_major)" -ge 17 ] || apt_install "java 17+"
  [ "$(java_major)" -ge 17 ] || die "java 17+ required, but \`java\` on PATH is version $(java_major) (0 = none); put a JDK/JRE 17+ first on PATH"
  local want; want=$(sha256sum <"$POM" | cut -c1-64)
  if [ -f "$MARKER" ] && [ "$(cat "$MARKER")" = "$want" ] && [ -d "$LIBS" ]; then return 0; fi
  command -v mvn >/dev/null || apt_install "maven"
  say "resolving Kafka jars from Maven Central into $LIBS"
  mkdir -p "$CACHE" && rm -rf "$LIBS.tmp" "$MARKER"
  # mvn output goes to a file (it prints ANSI junk even with -q -B), shown on failure.
  mvn -q -B -f "$POM" dependency:copy-dependencies -DoutputDirectory="$LIBS.tmp" -DincludeScope=runtime \
    >"$CACHE/mvn.log" 2>&1 || { cat "$CACHE/mvn.log" >&2
    die "mvn could not resolve the Kafka jars (no network / Maven Central access? see output above)"; }
  ls "$LIBS.tmp"/kafka_2.13-*.jar >/dev/null 2>&1 || die "mvn finished but kafka_2.13 jar is missing in $LIBS.tmp"
  rm -rf "$LIBS" && mv "$LIBS.tmp" "$LIBS" && echo "$want" >"$MARKER"
}

# --- helpers for a broker directory ---------------------------------------
pid_of() { [ -f "$DIR/broker.pid" ] && cat "$DIR/broker.pid" || true; }
# True if the pid is a live (not zombie) kafka.Kafka process. Checking the
# command line guards against a stale pid file whose pid was reused.
alive() {
  local pid; pid=$(pid_of); [ -n "$pid" ] || return 1
  local stat; stat=$(ps -o stat= -p "$pid" 2>/dev/null) || return 1
  [[ $stat != Z* && $(ps -o args= -p "$pid") == *kafka.Kafka* ]]
}
port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
prop() { [ ! -f "$DIR/server.properties" ] || sed -n "s|^$1=||p" "$DIR/server.properties" | tail -1; }
broker_port() { prop advertised.listeners | sed 's|^PLAINTEXT://[^:]*:\([0-9]*\).*|\1|'; }
free_port() {
  command -v python3 >/dev/null || die "python3 is needed to pick a free port; pass --controller-port"
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

parse_args() {
  DIR="" PORT="" CPORT="" SPORT=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --dir) DIR="${2:?--dir needs a value}"; shift 2 ;;
      --port) PORT="${2:?--port needs a value}"; shift 2 ;;
      --controller-port) CPORT="${2:?--controller-port needs a value}"; shift 2 ;;
      --sasl-port) SPORT="${2:?--sasl-port needs a value}"; shift 2 ;;
      *) die "unknown argument: $1" ;;
    esac
  done
  [ -n "$DIR" ] || die "--dir DIR is required"
}

do_start() {
  [ -n "$PORT" ] || die "--port PORT is required"
  mkdir -p "$DIR" && DIR=$(cd "$DIR" && pwd)
  if alive && port_open "$(broker_port)"; then
    [ "$(broker_port)" = "$PORT" ] || die "a broker from $DIR is already running on port $(broker_port), not $PORT; stop it first"
    say "broker already running at 127.0.0.1:$PORT (pid $(pid_of))"; return 0
  fi
  alive && die "pid $(pid_of) from $DIR/broker.pid is running but not answering; run: $0 stop --dir $DIR"
  port_open "$PORT" && die "port $PORT on 127.0.0.1 is already in use by another process"
  do_install
  # On a restart reuse the previous controller port when none is given, so the
  # config only changes when asked to (the quorum also copes with a new one).
  [ -n "$CPORT" ] || CPORT=$(prop controller.quorum.bootstrap.servers | sed 's|.*:||')
  [ -n "$CPORT" ] || CPORT=$(free_port)
  [ -n "$SPORT" ] || SPORT=$(prop advertised.listeners | sed -n 's|.*SASL_PLAINTEXT://[^:]*:\([0-9]*\).*|\1|p')
  local listeners="PLAINTEXT://127.0.0.1:$PORT" sasl_props="" scram=()
  if [ -n "$SPORT" ]; then
    listeners="$listeners,SASL_PLAINTEXT://127.0.0.1:$SPORT"
    sasl_props="sasl.enabled.mechanisms=SCRAM-SHA-256
listener.name.sasl_plaintext.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;"
    scram=(--add-scram 'SCRAM-SHA-256=[name=segstream,password=segstream-secret]')
  fi
  cat >"$DIR/server.properties" <<EOF
# Written by scripts/kafka-broker.sh: single-node KRaft broker for tests.
process.roles=broker,controller
node.id=1
listeners=$listeners,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=$listeners
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT
$sasl_props
controller.quorum.bootstrap.servers=127.0.0.1:$CPORT
log.dirs=$DIR/data
num.partitions=1
auto.create.topics.enable=false
group.initial.rebalance.delay.ms=0
# One node: every internal topic must have replication factor / min ISR 1, and
# a single partition so first use of groups/transactions is quick.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
share.coordinator.state.topic.num.partitions=1
# A dead producer's open transaction is aborted within a second of its
# timeout (default check every 10 s), so readers are not held back longer.
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
# Compaction observable in tests: cleaner checks every second (default 15 s);
# a small dedupe buffer keeps the 512 MB heap free (default 128 MB).
log.cleaner.enable=true
log.cleaner.backoff.ms=1000
log.cleaner.dedupe.buffer.size=16777216
EOF
  local java_cp=(java "${JVM_OPTS[@]}" -cp "$LIBS/*")
  if [ ! -f "$DIR/data/meta.properties" ]; then
    local id; id=$("${java_cp[@]}" kafka.tools.StorageTool random-uuid | tail -1) || die "StorageTool random-uuid failed"
    "${java_cp[@]}" kafka.tools.StorageTool format --standalone -t "$id" -c "$DIR/server.properties" "${scram[@]}" >"$DIR/format.log" 2>&1 \
      || { cat "$DIR/format.log" >&2; die "formatting $DIR/data failed (output above)"; }
  fi
  # setsid: own session, so the broker survives the calling shell / make and is
  # not hit by its Ctrl-C. The inner shell writes its own pid, then execs java,
  # so the pid file is java's pid. stdin/stdout/stderr are detached so a caller
  # reading our output through a pipe does not wait for the broker to exit.
  [ ! -f "$DIR/broker.log" ] || mv "$DIR/broker.log" "$DIR/broker.log.1"  # keep the previous run's log
  rm -f "$DIR/broker.pid"
  # shellcheck disable=SC2016  # $$ and $1 are for the inner shell
  nohup setsid bash -c 'echo $$ >"$1/broker.pid"; shift; exec "$@"' _ "$DIR" "${java_cp[@]}" \
    kafka.Kafka "$DIR/server.properties" </dev/null >"$DIR/broker.log" 2>&1 &
  local deadline=$((SECONDS + ${KAFKA_START_TIMEOUT:-60}))
  while [ ! -s "$DIR/broker.pid" ] && [ $SECONDS -lt "$deadline" ]; do sleep 0.1; done
  # Ready = the port accepts connections AND the broker logged that it finished
  # starting (it listens a bit before it can serve metadata requests).
  while :; do
    if ! alive; then
      { tail -n 40 "$DIR/broker.log" || true; } >&2; die "broker process exited during startup (log: $DIR/broker.log)"
    fi
    if grep -q 'Kafka Server started' "$DIR/broker.log" && port_open "$PORT"; then break; fi
    if [ $SECONDS -ge "$deadline" ]; then
      { tail -n 40 "$DIR/broker.log" || true; } >&2; do_stop >/dev/null 2>&1 || true
      die "broker not ready after ${KAFKA_START_TIMEOUT:-60}s, stopped it (log: $DIR/broker.log; raise KAFKA_START_TIMEOUT?)"
    fi
    sleep 0.2
  done
  say "broker ready at 127.0.0.1:$PORT (controller $CPORT, pid $(pid_of), log $DIR/broker.log)"
}

do_stop() {
  DIR=$(cd "$DIR" 2>/dev/null && pwd) || { say "no such dir, not running"; return 0; }
  if ! alive; then rm -f "$DIR/broker.pid"; say "not running"; return 0; fi
  local pid; pid=$(pid_of)
  kill -TERM "$pid" 2>/dev/null || true
  # SIGTERM = clean shutdown (usually < 1 s, leaves .kafka_cleanshutdown so the
  # next start skips log recovery); give it up to 30 s before SIGKILL.
  for _ in $(seq 1 150); do alive || break; sleep 0.2; done
  if alive; then say "pid $pid did not exit after 30 s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  rm -f "$DIR/broker.pid"; say "stopped (pid $pid)"
}

do_status() {
  DIR=$(cd "$DIR" 2>/dev/null && pwd) || exit 1
  alive && port_open "$(broker_port)" && echo "127.0.0.1:$(broker_port)" && return 0
  exit 1
}

cmd="${1:-}"; shift || true
case "$cmd" in
  install) do_install; echo "$CACHE" ;;
  start) parse_args "$@"; do_start ;;
  stop) parse_args "$@"; do_stop ;;
  status) parse_args "$@"; do_status ;;
  free-port) free_port ;;
  *) die "usage: $0 install | start --dir DIR --port PORT [--controller-port CPORT] [--sasl-port SPORT] | stop --dir DIR | status --dir DIR | free-port" ;;
esac
