#!/usr/bin/env bash
# End-to-end import bench on an RDB of 1 GB or more, against the physical limit
# (redis-server loading the same RDB at startup) and against the `rdb` crate's CLI
# piped into `redis-cli --pipe`.
#   benches/import-vs-native.sh [KEYS]     (default 2,500,000 keys: about 1.15 GB of RDB)
# Needs the rdb CLI: cargo install rdb --root .tools/rdb-cli (skipped, and said so, if absent).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
KEYS=${1:-2500000}
cargo build --release --quiet
RV=$PWD/target/release/redvault
RDB_CLI=$PWD/.tools/rdb-cli/bin/rdb
work=$(mktemp -d /tmp/redvault-bench.XXXXXX)
pids=()
cleanup() { stop_redis; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/src" "$work/store"
start_redis "$work/src"
echo "filling redis with $KEYS keys..."
fill_redis "$KEYS"
src_digest=$(redis-cli -p "$REDIS_PORT" debug digest)
src_keys=$(( $(redis-cli -p "$REDIS_PORT" -n 0 dbsize) + $(redis-cli -p "$REDIS_PORT" -n 1 dbsize) ))
$RV keys generate --bits 3072 --out "$work/kek.pem" >/dev/null 2>&1
$RV export --redis "redis://127.0.0.1:$REDIS_PORT" --to "file://$work/store" --source bench --kek "$work/kek.pub.pem" 2>/dev/null
redis-cli -p "$REDIS_PORT" --rdb "$work/dump.rdb" >/dev/null 2>&1
stop_redis
rdb_bytes=$(stat -c %s "$work/dump.rdb")

# Native load: redis-server reads the RDB at startup; its log gives the time.
mkdir -p "$work/native"; cp "$work/dump.rdb" "$work/native/dump.rdb"
start_redis "$work/native"
while redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q LOADING; do sleep 0.05; done
native=$(sed -n 's/.*DB loaded from disk: \([0-9.]*\) seconds.*/\1/p' "$work/native/redis.log" | tail -1)
stop_redis

# redvault import of the sealed backup into an empty server: through the
# replication feed (the target loads the RDB itself), and with RESTORE.
mkdir -p "$work/feed"; start_redis "$work/feed"
timed feed feed_rss $RV import --redis "redis://127.0.0.1:$REDIS_PORT" --from "file://$work/store" --kek "$work/kek.pem" --via replication
feed_digest=$(redis-cli -p "$REDIS_PORT" debug digest)
stop_redis
mkdir -p "$work/rv"; start_redis "$work/rv"
timed imp rss $RV import --redis "redis://127.0.0.1:$REDIS_PORT" --from "file://$work/store" --kek "$work/kek.pem" --via restore
rv_digest=$(redis-cli -p "$REDIS_PORT" debug digest)
stop_redis

# The rdb crate's CLI as protocol, piped into redis-cli --pipe.
rdbcli="(not installed: cargo install rdb --root .tools/rdb-cli)"
if [ -x "$RDB_CLI" ]; then
  mkdir -p "$work/rdbcli"; start_redis "$work/rdbcli"
  timed rdbcli_s _ sh -c "'$RDB_CLI' --format protocol '$work/dump.rdb' | redis-cli -p $REDIS_PORT --pipe >/dev/null 2>&1 || true"
  rdbcli_keys=$(( $(redis-cli -p "$REDIS_PORT" -n 0 dbsize) + $(redis-cli -p "$REDIS_PORT" -n 1 dbsize) ))
  stop_redis
  rdbcli="${rdbcli_s}s, $rdbcli_keys of $src_keys keys loaded"
fi

echo
echo "RDB: $((rdb_bytes/1000000)) MB, $src_keys keys"
echo "native load at startup: ${native}s ($(python3 -c "print('%.0f' % ($src_keys/$native))") keys/s)"
echo "redvault import --via replication (sealed backup, file://): ${feed}s ($(python3 -c "print('%.0f' % ($src_keys/$feed))") keys/s), peak RSS $((feed_rss/1024)) MiB"
echo "redvault import --via restore (sealed backup, file://): ${imp}s ($(python3 -c "print('%.0f' % ($src_keys/$imp))") keys/s), peak RSS $((rss/1024)) MiB"
echo "rdb --format protocol | redis-cli --pipe: $rdbcli"
[ "$feed_digest" = "$src_digest" ] && echo "redvault import --via replication digest: equal to source" || echo "redvault import --via replication digest: DIFFERS ($feed_digest vs $src_digest)"
[ "$rv_digest" = "$src_digest" ] && echo "redvault import --via restore digest: equal to source" || echo "redvault import --via restore digest: DIFFERS ($rv_digest vs $src_digest)"
echo "RATIO import --via replication speed / native load speed: $(ratio "$native" "$feed")  (goal >= 0.9)"
echo "RATIO import --via restore speed / native load speed: $(ratio "$native" "$imp")  (goal >= 0.65)"
[ -x "$RDB_CLI" ] && echo "RATIO import speed / rdb-cli pipe speed: $(ratio "$rdbcli_s" "$imp")  (goal >= 10)"
echo "peak RSS: replication $((feed_rss/1024)) MiB, restore $((rss/1024)) MiB (goal <= 128 MiB)"
