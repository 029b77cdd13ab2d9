#!/usr/bin/env bash
# What converting for an older server costs: a sealed backup of Redis 7.0
# (RDB 10: listpacks, quicklists of listpacks) imported into Redis 6.2, which
# reads RDB 9, once converted at import time and once from an export written
# with --rdb-version 9 (nothing left to convert), into the same 6.2 binary.
#   benches/convert-for-older.sh [KEYS]     (default 2,500,000 keys)
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
KEYS=${1:-2500000}
OLD=$PWD/.tools/versions/redis-6.2/redis-server
[ -x "$OLD" ] || { echo "Redis 6.2 is missing at $OLD: run scripts/setup" >&2; exit 1; }
cargo build --release --quiet
RV=$PWD/target/release/redvault
work=$(mktemp -d /tmp/redvault-bench.XXXXXX)
cleanup() { stop_redis; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/src" "$work/store"
start_redis "$work/src"
echo "filling redis 7.0 with $KEYS keys..."
fill_redis "$KEYS"
src_digest=$(redis-cli -p "$REDIS_PORT" debug digest)
$RV keys generate --bits 3072 --out "$work/kek.pem" >/dev/null 2>&1
timed exp10 _ $RV export --redis "redis://127.0.0.1:$REDIS_PORT" --to "file://$work/store" --source rdb10 --kek "$work/kek.pub.pem" 2>/dev/null
timed exp9 rss9 $RV export --redis "redis://127.0.0.1:$REDIS_PORT" --to "file://$work/store" --source rdb9 --rdb-version 9 --kek "$work/kek.pub.pem" 2>"$work/exp9.log"
stop_redis

run_import() { # SOURCE -> seconds in $imp, digest in $dig
  rm -rf "$work/dst"; mkdir -p "$work/dst"; start_redis "$work/dst" "$OLD"
  timed imp imp_rss $RV import --redis "redis://127.0.0.1:$REDIS_PORT" --from "file://$work/store" --source "$1" --kek "$work/kek.pem" 2>"$work/imp-$1.log"
  dig=$(redis-cli -p "$REDIS_PORT" debug digest)
  stop_redis
}
run_import rdb9; plain=$imp; plain_dig=$dig
run_import rdb10; conv=$imp; conv_dig=$dig; conv_rss=$imp_rss

echo
echo "export (RDB 10): ${exp10}s; export --rdb-version 9: ${exp9}s, peak RSS $((rss9/1024)) MiB"
tail -1 "$work/exp9.log" | sed 's/^/  /'
echo "import into Redis 6.2 of the RDB 9 export (no conversion): ${plain}s"
echo "import into Redis 6.2 of the RDB 10 export (converted): ${conv}s, peak RSS $((conv_rss/1024)) MiB"
tail -1 "$work/imp-rdb10.log" | sed 's/^/  /'
for d in "$plain_dig" "$conv_dig"; do
  [ "$d" = "$src_digest" ] && echo "digest: equal to source" || echo "digest: DIFFERS ($d vs $src_digest)"
done
echo "RATIO converting import speed / plain import speed: $(ratio "$plain" "$conv")  (goal >= 0.7: conversion costs at most 30%)"
echo "RATIO export --rdb-version 9 speed / export speed: $(ratio "$exp10" "$exp9")"
