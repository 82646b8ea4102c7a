#!/usr/bin/env bash
# `make demo`: a fresh local Kafka broker, the worker, synthetic traffic from
# customer personas, and the segment changes printed as they are committed.
#
# Env: DEMO_CUSTOMERS (default 300), DEMO_DAYS (540), DEMO_RATE (events/s,
# default 15000), KAFKA_PORT (default 9092; a free one if taken),
# METRICS_PORT (default 9898), SQL_PORT (default 9899), DEMO_KEEP=1 to keep running until Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BIN=target/debug/segstream
DEMO=.local/demo
BROKER_DIR="$DEMO/broker"
CUSTOMERS=${DEMO_CUSTOMERS:-300}
DAYS=${DEMO_DAYS:-540}
RATE=${DEMO_RATE:-15000}

port_busy() { timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
pick_port() { if port_busy "$1"; then scripts/kafka-broker.sh free-port; else echo "$1"; fi; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  scripts/kafka-broker.sh stop --dir "$BROKER_DIR" >/dev/null 2>&1 || true
}
trap cleanup EXIT

# A fresh cluster each time, so the demo starts from an empty history.
scripts/kafka-broker.sh stop --dir "$BROKER_DIR" >/dev/null 2>&1 || true
rm -rf "$DEMO" && mkdir -p "$DEMO"
KAFKA_PORT=$(pick_port "${KAFKA_PORT:-9092}")
METRICS_PORT=$(pick_port "${METRICS_PORT:-9898}")
SQL_PORT=$(pick_port "${SQL_PORT:-9899}")
scripts/kafka-broker.sh start --dir "$BROKER_DIR" --port "$KAFKA_PORT"
export SEGSTREAM__KAFKA__BOOTSTRAP_SERVERS="127.0.0.1:$KAFKA_PORT"
export SEGSTREAM__HTTP__LISTEN="127.0.0.1:$METRICS_PORT"
# /sql serves customer data: its own listener, a bearer token from the environment.
export SEGSTREAM__SQL__LISTEN="127.0.0.1:$SQL_PORT"
SEGSTREAM_SQL_TOKEN=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
export SEGSTREAM_SQL_TOKEN
export SEGSTREAM__WORKER__INSTANCE_ID=demo
# When the traffic stops, every partition follows the input's watermark after
# 2 s (not the default 30 s), so the last timers fire before the summary.
export SEGSTREAM__TIME__IDLE_PARTITION_MS=2000
# The state of a partition (and its Parquet feature table) is checkpointed
# every second, the oldest first, under the demo's directory: what
# `segments diff` reads.
export SEGSTREAM__CHECKPOINT__URL="$ROOT/$DEMO/checkpoints"
export SEGSTREAM__CHECKPOINT__INTERVAL_MS=1000
"$BIN" topics create >/dev/null

"$BIN" worker 2>"$DEMO/worker.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null && break; sleep 0.2; done
curl -sf "http://127.0.0.1:$METRICS_PORT/readyz" >/dev/null || { tail -20 "$DEMO/worker.log"; echo "worker did not become ready" >&2; exit 1; }

cat <<MSG

  segstream demo: broker 127.0.0.1:$KAFKA_PORT, worker metrics http://127.0.0.1:$METRICS_PORT/metrics
  Generating $DAYS days of traffic for $CUSTOMERS customers (event time runs far faster than wall time).
  Each line: event time, customer, previous stage → new stage, (trigger) why.

MSG
# Process substitution, so $! is the watcher itself and stopping it ends tee too.
"$BIN" watch --kind lifecycle > >(tee "$DEMO/changes.log") & pids+=($!)
"$BIN" generate --customers "$CUSTOMERS" --days "$DAYS" --rate "$RATE" >"$DEMO/generator.log" 2>&1

# Let the worker drain what the generator produced.
for _ in $(seq 60); do
  lag=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^segstream_consumer_lag_messages/ {s += $2} END {print s + 0}')
  [ "${lag:-1}" = 0 ] && break
  sleep 1
done
sleep 6 # one more statistics interval, so the lag gauge and the last batch are final

echo
echo "── what the generator made (ground truth) ──"
cat "$DEMO/generator.log"
echo
echo "── customers per lifecycle stage now (from http://127.0.0.1:$METRICS_PORT/metrics) ──"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^segstream_(segment_population|customers_in_state|segment_changes_total|events_in_total|dead_letters_total|transactions_total)' | sed 's/^/  /'
echo
echo "── ask the running worker in SQL (segstream sql, over its live state) ──"
"$BIN" sql "SELECT lifecycle, count(*) AS customers, round(avg(revenue_365d), 2) AS avg_revenue_365d,
  round(avg(sessions_30d), 1) AS avg_sessions_30d, sum(CASE WHEN cart_abandoned THEN 1 ELSE 0 END) AS abandoned_carts
  FROM features GROUP BY lifecycle ORDER BY customers DESC" | sed 's/^/  /'
"$BIN" sql "SELECT rfm, count(*) AS customers, round(avg(revenue_365d), 2) AS avg_revenue_365d
  FROM features WHERE rfm IS NOT NULL GROUP BY rfm ORDER BY customers DESC" | sed 's/^/  /'
"$BIN" sql "SELECT customer_id, round(abandoned_cart_value, 2) AS cart, preferred_device, top_category
  FROM features WHERE cart_abandoned ORDER BY abandoned_cart_value DESC LIMIT 5" | sed 's/^/  /'
echo
echo "── change the segment definitions while it runs: diff first, then roll out ──"
sed 's/^version = 1$/version = 2/' crates/segstream-segments/segments.toml >"$DEMO/segments-v2.toml"
cat >>"$DEMO/segments-v2.toml" <<'TOML'

[[custom]]
name = "vip_at_risk"
sql = "revenue_365d > 300 AND lifecycle IN ('at_risk', 'churned')"
TOML
echo "  + [[custom]] vip_at_risk: revenue_365d > 300 AND lifecycle IN ('at_risk', 'churned')"
sleep 7 # every partition checkpointed since the traffic stopped
"$BIN" segments diff "$DEMO/segments-v2.toml" --sample 3 | sed 's/^/  /'
"$BIN" segments rollout "$DEMO/segments-v2.toml" 2>&1 | sed 's/^/  /'
sleep 3
"$BIN" segment custom vip_at_risk --sample 5 | sed 's/^/  /'
first=$("$BIN" segment custom vip_at_risk --sample 1 | grep -o '"cust-[0-9]*"' | head -1 | tr -d '"')
if [ -n "$first" ]; then
  echo "  one of them, with the reasons of their latest changes (segstream customer $first):"
  "$BIN" customer "$first" | grep -E '"(segment|trigger|reason|lifecycle|rfm|revenue_365d|custom)"' | head -16 | sed 's/^/  /'
fi
echo
echo "── fit the models on the workers' checkpoints and publish them (segstream train) ──"
"$BIN" train 2>/dev/null | sed 's/^/  /'
sleep 3 # the worker puts the model in force before its next batch
echo
echo "── the running worker took the model (no restart): clusters, micro-segments, scores ──"
curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^segstream_model_(version|swaps_total)' | sed 's/^/  /'
"$BIN" sql "SELECT cluster_segment, count(*) AS buyers, round(avg(p_alive), 3) AS avg_p_alive,
  round(avg(expected_orders), 2) AS avg_expected_orders_90d, round(avg(clv), 2) AS avg_clv
  FROM features WHERE cluster_segment IS NOT NULL GROUP BY cluster_segment ORDER BY buyers DESC" | sed 's/^/  /'
"$BIN" sql "SELECT lifecycle || ':' || cluster_segment AS micro_segment, count(*) AS buyers
  FROM features WHERE cluster_segment IS NOT NULL GROUP BY 1 ORDER BY buyers DESC LIMIT 8" | sed 's/^/  /'
echo
echo "  $(grep -c . "$DEMO/changes.log") lifecycle transitions printed, all in $DEMO/changes.log (RFM, behaviour and cluster changes: segstream watch --kind rfm / behaviour / cluster); worker log in $DEMO/worker.log; checkpoints and Parquet feature tables under $DEMO/checkpoints"
if [ "${DEMO_KEEP:-0}" = 1 ]; then
  echo "  DEMO_KEEP=1: still running; Ctrl-C to stop."
  wait "${pids[0]}"
fi
