#!/usr/bin/env bash
# Redis Cluster export and import against their reference figures (issue 13):
#  - export of a 3-primary cluster, vs the slowest primary's `redis-cli --rdb`;
#  - import of a backup into an empty 3-primary cluster, vs the sum of the
#    primaries' native load speeds (each loading its own shard's RDB at startup).
#   benches/cluster.sh [KEYS]     (default 1,000,000 keys, about 460 MB of RDB)
# All on one machine: the three primaries share its cores, so the sum of
# their native speeds is what three machines would give, not this one; so
# each is also measured against its reference run three at once here.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
KEYS=${1:-1000000}
cargo build --release --quiet
RV=$PWD/target/release/redvault
work=$(mktemp -d /tmp/redvault-bench.XXXXXX)
node_pids=()
once_pids=()
cleanup() {
  stop_redis
  for p in "${node_pids[@]}" "${once_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

# A port of at most 55535 whose cluster bus port (+10000) is free too.
cluster_port() {
  python3 -c '
import random, socket
for _ in range(1000):
    p = random.randint(20000, 55535)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'
}

# start_cluster NAME -> sets NODE_PORTS (3 primaries, slots split evenly)
start_cluster() {
  local name=$1 i port
  NODE_PORTS=()
  for i in 0 1 2; do
    port=$(cluster_port)
    mkdir -p "$work/$name-$i"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$work/$name-$i" --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --repl-diskless-sync-delay 0 \
      --enable-debug-command yes --logfile "$work/$name-$i/redis.log" &
    node_pids+=($!)
    NODE_PORTS+=("$port")
  done
  for port in "${NODE_PORTS[@]}"; do
    until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.1; done
  done
  redis-cli -p "${NODE_PORTS[0]}" cluster addslotsrange 0 5460 >/dev/null
  redis-cli -p "${NODE_PORTS[1]}" cluster addslotsrange 5461 10921 >/dev/null
  redis-cli -p "${NODE_PORTS[2]}" cluster addslotsrange 10922 16383 >/dev/null
  redis-cli -p "${NODE_PORTS[0]}" cluster meet 127.0.0.1 "${NODE_PORTS[1]}" >/dev/null
  redis-cli -p "${NODE_PORTS[0]}" cluster meet 127.0.0.1 "${NODE_PORTS[2]}" >/dev/null
  for port in "${NODE_PORTS[@]}"; do
    for _ in $(seq 1 300); do
      redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' && break
      sleep 0.1
    done
  done
}

cluster_keys() { local n=0 p; for p in "${NODE_PORTS[@]}"; do n=$((n + $(redis-cli -p "$p" dbsize))); done; echo $n; }

mkdir -p "$work/src" "$work/store"
start_redis "$work/src"
echo "filling redis with $KEYS keys..."
fill_redis "$KEYS"
src_keys=$(( $(redis-cli -p "$REDIS_PORT" -n 0 dbsize) + $(redis-cli -p "$REDIS_PORT" -n 1 dbsize) ))
$RV keys generate --bits 3072 --out "$work/kek.pem" >/dev/null 2>&1
$RV export --redis "redis://127.0.0.1:$REDIS_PORT" --to "file://$work/store" --source single --kek "$work/kek.pub.pem" 2>/dev/null
stop_redis

# Import into an empty cluster (the dataset's two databases into db 0).
start_cluster a
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
node_ticks() { local n=0 p; for p in "${node_pids[@]}"; do n=$((n + $(ticks "$p"))); done; echo $n; }
t_nodes0=$(node_ticks)
timed imp imp_rss $RV import --redis "redis://127.0.0.1:${NODE_PORTS[0]}" --from "file://$work/store" --source single --target-db 0 --kek "$work/kek.pem" 2>"$work/imp.log"
loaded=$(cluster_keys)
nodes_cpu=$(python3 -c "print('%.2f' % (($(node_ticks) - $t_nodes0) / $(getconf CLK_TCK)))")

# Export of the cluster, then each primary's RDB by redis-cli --rdb.
timed exp exp_rss $RV export --redis "redis://127.0.0.1:${NODE_PORTS[0]}" --to "file://$work/store" --source cluster --kek "$work/kek.pub.pem" 2>"$work/exp.log"
slowest=0
for i in 0 1 2; do
  timed t _ redis-cli -p "${NODE_PORTS[$i]}" --rdb "$work/node$i.rdb"
  slowest=$(python3 -c "print(max($slowest, $t))")
done

# The same three redis-cli --rdb at once: what this machine gives when the
# three primaries fork and serve together, as they do for a cluster export.
t0=$(date +%s.%N)
cli_pids=()
for i in 0 1 2; do redis-cli -p "${NODE_PORTS[$i]}" --rdb "$work/at-once$i.rdb" >/dev/null 2>&1 & cli_pids+=($!); done
for p in "${cli_pids[@]}"; do wait "$p" || { echo "redis-cli --rdb failed at once on the three primaries" >&2; exit 1; }; done
together=$(python3 -c "import time; print('%.2f' % (time.time() - $t0))")
rm -f "$work"/at-once*.rdb

# Native load of each shard's RDB at startup (one server at a time).
native_sum=0; native_secs=0
for i in 0 1 2; do
  mkdir -p "$work/native$i"; cp "$work/node$i.rdb" "$work/native$i/dump.rdb"
  start_redis "$work/native$i"
  while redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q LOADING; do sleep 0.05; done
  secs=$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$work/native$i/redis.log" | tail -1)
  keys=$(redis-cli -p "$REDIS_PORT" dbsize)
  stop_redis
  native_sum=$(python3 -c "print($native_sum + $keys / max($secs, 1e-3))")
  native_secs=$(python3 -c "print('%.2f' % ($native_secs + $secs))")
done

# The three loads at once, on this machine's cores: the wall time from
# starting the three servers together until each answers PONG.
once_ports=()
for i in 0 1 2; do once_ports+=("$(cluster_port)"); done
t0=$(date +%s.%N)
for i in 0 1 2; do
  redis-server --port "${once_ports[$i]}" --bind 127.0.0.1 --dir "$work/native$i" --save "" \
    --appendonly no --daemonize no --logfile "$work/native$i/redis.log" &
  once_pids+=($!)
done
for port in "${once_ports[@]}"; do
  for _ in $(seq 1 6000); do   # two minutes at most
    [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && continue 2
    sleep 0.02
  done
  echo "a server on port $port did not load its shard; see $work/native*/redis.log" >&2
  exit 1
done
native_together=$(python3 -c "import time; print('%.2f' % (time.time() - $t0))")
for pid in "${once_pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
once_pids=()
REDIS_PID=

echo
echo "source: $src_keys keys; in the cluster after import: $loaded"
echo "import into 3 primaries: ${imp}s ($(python3 -c "print('%.0f' % ($src_keys/$imp))") keys/s), peak RSS $((imp_rss/1024)) MiB"
tail -1 "$work/imp.log" | sed 's/^/  /'
echo "CPU of the three primaries during the import (RESTOREs): ${nodes_cpu}s; their native loads: ${native_secs}s"
echo "sum of the primaries' native load speeds: $(python3 -c "print('%.0f' % $native_sum)") keys/s"
echo "cluster export: ${exp}s, peak RSS $((exp_rss/1024)) MiB; slowest primary's redis-cli --rdb: ${slowest}s"
tail -1 "$work/exp.log" | sed 's/^/  /'
echo "RATIO cluster export time / slowest redis-cli --rdb: $(ratio "$exp" "$slowest")  (goal <= 1.2)"
echo "RATIO import speed / sum of native load speeds: $(python3 -c "print('%.2f' % (($src_keys/$imp)/$native_sum))")  (goal >= 0.6)"
# What one machine can show: the references run at once on its cores.
echo "the three redis-cli --rdb at once: ${together}s; the three native loads at once: ${native_together}s"
echo "RATIO cluster export time / the three redis-cli --rdb at once: $(ratio "$exp" "$together")  (goal <= 1.2)"
echo "RATIO import speed / the three native loads at once: $(ratio "$native_together" "$imp")  (goal >= 0.6)"
