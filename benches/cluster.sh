#!/usr/bin/env bash
# Redis Cluster export and import against their reference figures (issue 13):
#  - export of a 3-primary cluster, vs the slowest primary's `redis-cli --rdb`;
#  - import of a backup into an empty 3-primary cluster, vs the sum of the
#    primaries' native load speeds (each loading its own shard's RDB at startup).
#   benches/cluster.sh [KEYS]     (default 1,000,000 keys, about 460 MB of RDB)
# All on one machine: the three primaries share its cores, so the sum of
# their native speeds is what three machines would give, not this one.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
KEYS=${1:-1000000}
cargo build --release --quiet
RV=$PWD/target/release/redvault
work=$(mktemp -d /tmp/redvault-bench.XXXXXX)
node_pids=()
cleanup() {
  stop_redis
  for p in "${node_pids[@]}"; do kill "$p" 2>/dev/null || true; done
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
timed imp imp_rss $RV import --redis "redis://127.0.0.1:${NODE_PORTS[0]}" --from "file://$work/store" --source single --target-db 0 --kek "$work/kek.pem" 2>"$work/imp.log"
loaded=$(cluster_keys)

# Export of the cluster, then each primary's RDB by redis-cli --rdb.
timed exp exp_rss $RV export --redis "redis://127.0.0.1:${NODE_PORTS[0]}" --to "file://$work/store" --source cluster --kek "$work/kek.pub.pem" 2>"$work/exp.log"
slowest=0
for i in 0 1 2; do
  timed t _ redis-cli -p "${NODE_PORTS[$i]}" --rdb "$work/node$i.rdb"
  slowest=$(python3 -c "print(max($slowest, $t))")
done

# Native load of each shard's RDB at startup (one server at a time).
native_sum=0
for i in 0 1 2; do
  mkdir -p "$work/native$i"; cp "$work/node$i.rdb" "$work/native$i/dump.rdb"
  start_redis "$work/native$i"
  while redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q LOADING; do sleep 0.05; done
  secs=$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$work/native$i/redis.log" | tail -1)
  keys=$(redis-cli -p "$REDIS_PORT" dbsize)
  stop_redis
  native_sum=$(python3 -c "print($native_sum + $keys / max($secs, 1e-3))")
done

echo
echo "source: $src_keys keys; in the cluster after import: $loaded"
echo "import into 3 primaries: ${imp}s ($(python3 -c "print('%.0f' % ($src_keys/$imp))") keys/s), peak RSS $((imp_rss/1024)) MiB"
tail -1 "$work/imp.log" | sed 's/^/  /'
echo "sum of the primaries' native load speeds: $(python3 -c "print('%.0f' % $native_sum)") keys/s"
echo "cluster export: ${exp}s, peak RSS $((exp_rss/1024)) MiB; slowest primary's redis-cli --rdb: ${slowest}s"
tail -1 "$work/exp.log" | sed 's/^/  /'
echo "RATIO cluster export time / slowest redis-cli --rdb: $(ratio "$exp" "$slowest")  (goal <= 1.2)"
echo "RATIO import speed / sum of native load speeds: $(python3 -c "print('%.2f' % (($src_keys/$imp)/$native_sum))")  (goal >= 0.6)"
