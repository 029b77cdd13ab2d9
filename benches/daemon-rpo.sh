#!/usr/bin/env bash
# The daemon under a steady, bounded write load: RPO (write -> durable, p50/p99,
# measured with WAIT), the daemon's CPU share and peak RSS, then `restore` of the
# result against native RDB load of the same data.
#   benches/daemon-rpo.sh [RATE] [SECONDS] [BASE_KEYS]   (default 20000 60 300000)
#   STORE=azurite benches/daemon-rpo.sh ...   the same into a loopback Azurite
#   (from scripts/setup; telemetry off) over HTTP with the emulator's key
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
RATE=${1:-20000}; SECS=${2:-60}; KEYS=${3:-300000}
cargo build --release --quiet
RV=$PWD/target/release/redvault
work=$(mktemp -d /tmp/redvault-rpo.XXXXXX)
dpid=
apid=
cleanup() { [ -n "$dpid" ] && kill "$dpid" 2>/dev/null; [ -n "$apid" ] && kill "$apid" 2>/dev/null; stop_redis; rm -rf "$work"; }
trap cleanup EXIT
mkdir -p "$work/src" "$work/store" "$work/state"
STORE_URL="file://$work/store"
if [ "${STORE:-file}" = azurite ]; then
  aport=$(free_port)
  mkdir -p "$work/azurite"
  .tools/azurite/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$aport" \
    --disableTelemetry --silent --loose --skipApiVersionCheck --location "$work/azurite" &
  apid=$!
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$aport") 2>/dev/null && break; sleep 0.1; done
  node tests/support/azurite-create-container.js "http://127.0.0.1:$aport" backups
  export AZURE_STORAGE_USE_EMULATOR=true AZURITE_BLOB_STORAGE_URL="http://127.0.0.1:$aport" AZURE_STORAGE_ACCOUNT_NAME=devstoreaccount1
  STORE_URL="az://backups"
fi
echo "store: $STORE_URL"
start_redis "$work/src"; SRC_PORT=$REDIS_PORT; SRC_PID=$REDIS_PID
echo "filling redis with $KEYS keys..."
fill_redis "$KEYS"
$RV keys generate --bits 3072 --out "$work/kek.pem" >/dev/null 2>&1
mport=$(free_port)
REDVAULT_LOG=warn $RV daemon --redis "redis://127.0.0.1:$SRC_PORT" --to "$STORE_URL" --source bench \
  --kek "$work/kek.pub.pem" --state-dir "$work/state" --listen "127.0.0.1:$mport" 2>"$work/daemon.log" &
dpid=$!
for _ in $(seq 1 600); do curl -sf "127.0.0.1:$mport/metrics" | grep -q '^redvault_up{source="bench"} 1' && break; sleep 0.1; done
ticks() { awk '{print $14+$15}' "/proc/$dpid/stat"; }
t0=$(ticks); s0=$(date +%s.%N)
python3 benches/rpo_load.py "$SRC_PORT" "$RATE" "$SECS"
t1=$(ticks); s1=$(date +%s.%N)
hz=$(getconf CLK_TCK)
cpu=$(python3 -c "print('%.1f' % (100*($t1-$t0)/$hz/($s1-$s0)))")
rss=$(awk '/VmHWM/ {print int($2/1024)}' "/proc/$dpid/status")
echo "daemon CPU: ${cpu}% of one core over the load; peak RSS ${rss} MiB (goal <= 128)"
redis-cli -p "$SRC_PORT" wait 1 20000 >/dev/null
src_digest=$(redis-cli -p "$SRC_PORT" debug digest)
redis-cli -p "$SRC_PORT" --rdb "$work/dump.rdb" >/dev/null 2>&1
kill -TERM "$dpid"; wait "$dpid" || true; dpid=
kill "$SRC_PID"; wait "$SRC_PID" 2>/dev/null || true; REDIS_PID=

mkdir -p "$work/native"; cp "$work/dump.rdb" "$work/native/dump.rdb"
start_redis "$work/native"
while redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q LOADING; do sleep 0.05; done
native=$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$work/native/redis.log" | tail -1)
stop_redis
# The base and the segments through the replication feed, then with RESTORE
# and the replay connection.
# The CPU the target (and Azurite) spend on it: on a machine this small they
# compete with each other and with redvault.
mkdir -p "$work/rv"; start_redis "$work/rv"
tr0=$(awk '{print $14+$15}' "/proc/$REDIS_PID/stat"); ta0=0
[ -n "$apid" ] && ta0=$(awk '{print $14+$15}' "/proc/$apid/stat")
timed rs rrss $RV restore --redis "redis://127.0.0.1:$REDIS_PORT" --from "$STORE_URL" --source bench --kek "$work/kek.pem" --via replication
tr1=$(awk '{print $14+$15}' "/proc/$REDIS_PID/stat"); ta1=0
[ -n "$apid" ] && ta1=$(awk '{print $14+$15}' "/proc/$apid/stat")
rcpu=$(python3 -c "print('%.2f' % (($tr1-$tr0)/$hz))"); acpu=$(python3 -c "print('%.2f' % (($ta1-$ta0)/$hz))")
rv_digest=$(redis-cli -p "$REDIS_PORT" debug digest)
stop_redis
mkdir -p "$work/rv2"; start_redis "$work/rv2"
timed rs2 rrss2 $RV restore --redis "redis://127.0.0.1:$REDIS_PORT" --from "$STORE_URL" --source bench --kek "$work/kek.pem" --via restore
rv2_digest=$(redis-cli -p "$REDIS_PORT" debug digest)
stop_redis
segs=$( (find "$work/store" -name '*.aof.rv' 2>/dev/null || true) | wc -l)
[ "${STORE:-file}" = azurite ] && segs="(in Azurite's own files)"
echo "segments stored: $segs"
echo "native load of the final state: ${native}s"
echo "restore --via replication (base + segments): ${rs}s, peak RSS $((rrss/1024)) MiB"
echo "restore --via restore (base + segments): ${rs2}s, peak RSS $((rrss2/1024)) MiB"
echo "CPU during restore --via replication: the target ${rcpu}s, Azurite ${acpu}s (of ${rs}s)"
echo "RATIO restore --via replication time / native load time: $(ratio "$rs" "$native")  (goal <= 1.3)"
echo "RATIO restore --via restore time / native load time: $(ratio "$rs2" "$native")"
[ "$rv_digest" = "$src_digest" ] && echo "restore --via replication digest: equal to source" || echo "restore --via replication digest: DIFFERS"
[ "$rv2_digest" = "$src_digest" ] && echo "restore --via restore digest: equal to source" || echo "restore --via restore digest: DIFFERS"
