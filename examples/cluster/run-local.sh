#!/usr/bin/env bash
# Starts a whole cluster on this machine, on loopback: one redis-server,
# two simulated model servers, a gateway, two agent nodes and two GPU nodes.
# Logs go to ./cluster-logs/. Ctrl-C stops everything.
#
#   examples/cluster/run-local.sh            # then:
#   build/nodes/troupe ctl nodes
#   python3 -m websockets ws://127.0.0.1:7800/ws
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
troupe="${TROUPE_BIN:-$here/../../build/nodes/troupe}"
logs="${LOGS:-$PWD/cluster-logs}"
mkdir -p "$logs"
pids=()
cleanup() {
  trap - INT TERM EXIT
  kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT
start() { # name, command...
  local name=$1
  shift
  "$@" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  echo "started $name (pid $!), log $logs/$name.log"
}

start redis redis-server --port 6390 --bind 127.0.0.1 --save "" --appendonly no --dir "$logs"
until redis-cli -p 6390 ping >/dev/null 2>&1; do sleep 0.1; done
start sim-1 "$troupe" sim-llm --port 8081 --tokens-per-s 200
start sim-2 "$troupe" sim-llm --port 8082 --tokens-per-s 200
for node in gpu-1 gpu-2 agents-1 agents-2 gateway; do
  start "$node" "$troupe" node --config "$here/$node.yaml"
done
until curl -fs http://127.0.0.1:7800/health >/dev/null; do sleep 0.2; done
echo
echo "cluster up: ws://127.0.0.1:7800/ws   ($troupe ctl nodes)"
"$troupe" ctl --gateway http://127.0.0.1:7800 nodes || true
wait
