#!/usr/bin/env bash
# `make run`: the whole pipeline on this host — aggregator with the embedded store,
# a collector watching this host's network namespace and pid namespace, and a live tail.
# Ctrl-C stops all three (by PID); the data stays in $DATA_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/procflow}
# The collector as sidecars run it: the same command as `procflow collector`, its own binary.
COLLECTOR_BIN=${COLLECTOR_BIN:-target/release/procflow-collector}
DATA_DIR=${DATA_DIR:-$PWD/.procflow}
LISTEN=${LISTEN:-127.0.0.1:7410}
UI_LISTEN=${UI_LISTEN:-127.0.0.1:7480}
# This host is not a pod: rules/host tunes the managed set for it (the host's own package
# upgrades are expected); RULES= names another directory of rule files.
RULES=${RULES:-$PWD/rules/host}
mkdir -p "$DATA_DIR/spool" "$DATA_DIR/logs"
# One local credential for the collector, the tail and the console's sign-in, made once and
# readable by this user alone.
TOKEN_FILE="$DATA_DIR/token"
if ! [ -s "$TOKEN_FILE" ]; then
  (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE")
fi

# A second `make run` would find the first one's aggregator answering and report itself
# running while its own had failed to bind.
if (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null; then
  echo "something already listens on $LISTEN (another make run?): stop it first" >&2
  exit 1
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  # Only the jobs still running: a pid of one that already ended may belong to another
  # process by now (pid_max can be 32768, and a busy host wraps it in minutes).
  for pid in $(jobs -pr); do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  echo
  echo "procflow stopped. Stored records stay in $DATA_DIR (query them with: $BIN query --aggregator http://$LISTEN --token-file $TOKEN_FILE --since 1h after 'make run')."
}
trap cleanup INT TERM EXIT

"$BIN" aggregator --listen "$LISTEN" --data-dir "$DATA_DIR" --metrics-listen 127.0.0.1:9465 \
  --token-file "$TOKEN_FILE" --ui-listen "$UI_LISTEN" --rules "$RULES" \
  >"$DATA_DIR/logs/aggregator.log" 2>&1 &
pids+=($!)

# Wait until the aggregator accepts connections (bounded).
for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/${LISTEN%:*}/${LISTEN##*:}") 2>/dev/null; then break; fi
  if ! kill -0 "${pids[0]}" 2>/dev/null; then
    echo "aggregator failed to start; its log:" >&2; cat "$DATA_DIR/logs/aggregator.log" >&2; exit 1
  fi
  sleep 0.1
done

POD_NAME=${POD_NAME:-$(hostname)} POD_NAMESPACE=${POD_NAMESPACE:-local} \
"$COLLECTOR_BIN" --output grpc --aggregator "http://$LISTEN" --token-file "$TOKEN_FILE" --spool-dir "$DATA_DIR/spool" \
  --metrics-listen 127.0.0.1:9464 >"$DATA_DIR/logs/collector.log" 2>&1 &
pids+=($!)

cat <<MSG
procflow is running on this host:
  console     http://$UI_LISTEN/  (sign in with the credential in $TOKEN_FILE)
  aggregator  gRPC $LISTEN, store $DATA_DIR/procflow.db (SQLite), log $DATA_DIR/logs/aggregator.log
              rules: the managed set tuned for a host by $RULES
              metrics http://127.0.0.1:9465/metrics
  collector   log $DATA_DIR/logs/collector.log, metrics http://127.0.0.1:9464/metrics, spool $DATA_DIR/spool
  live tail   below (flows, processes, alerts); Ctrl-C stops everything
  later       $BIN query --aggregator http://$LISTEN --token-file $TOKEN_FILE --since 10m --json
MSG
"$BIN" tail --aggregator "http://$LISTEN" --token-file "$TOKEN_FILE" &
pids+=($!)
wait "${pids[2]}"
