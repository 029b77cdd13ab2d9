#!/usr/bin/env bash
# End-to-end export bench on a real redis-server holding an RDB of 1 GB or more.
#   benches/export-vs-redis-cli.sh [KEYS]    (default 2,500,000 keys: about 1.15 GB of RDB)
#   METHOD=scan benches/export-vs-redis-cli.sh   (the SCAN source; goal <= 2.0)
# Prints: export wall time against `redis-cli --rdb /dev/null` on the same server,
# bytes stored against RDB size, and redvault's peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
KEYS=${1:-2500000}
METHOD=${METHOD:-psync}
GOAL=1.15; [ "$METHOD" = psync ] || GOAL=2.0
cargo build --release --quiet
RV=$PWD/target/release/redvault
work=$(mktemp -d /tmp/redvault-bench.XXXXXX)
trap 'stop_redis; rm -rf "$work"' EXIT
start_redis "$work"
echo "filling redis with $KEYS keys..."
fill_redis "$KEYS"
$RV keys generate --bits 3072 --out "$work/kek.pem" >/dev/null 2>&1
mkdir -p "$work/store"

# Each tool twice, alternating; the better run of each counts (shared machine).
best() { python3 -c "import sys; print(min(float(x) for x in sys.argv[1:]))" "$@"; }
cli=(); exp=(); rss=0
for i in 1 2; do
  # redis-cli exits 1 after the transfer because /dev/null cannot be fsynced.
  timed s _ sh -c "redis-cli -p $REDIS_PORT --rdb /dev/null >/dev/null 2>&1 || true"
  cli+=("$s")
  rm -rf "$work/store"/*
  timed s r $RV export --redis "redis://127.0.0.1:$REDIS_PORT" --to "file://$work/store" \
    --source bench --kek "$work/kek.pub.pem" --method "$METHOD"
  exp+=("$s"); [ "$r" -gt "$rss" ] && rss=$r
done
rdb_bytes=$(find "$work/store" -name manifest.json -exec python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["objects"][0]["plaintext_bytes"])' {} \;)
stored=$(du -cb "$work/store" | tail -1 | cut -f1)
c=$(best "${cli[@]}"); e=$(best "${exp[@]}")
echo
echo "RDB: $((rdb_bytes/1000000)) MB ($KEYS keys)"
echo "redis-cli --rdb /dev/null: ${cli[*]} s"
echo "redvault export --method $METHOD (sealed, file://): ${exp[*]} s, peak RSS $((rss/1024)) MiB"
echo "RATIO export time / redis-cli --rdb time: $(ratio "$e" "$c")  (goal <= $GOAL)"
echo "RATIO stored bytes / RDB bytes: $(ratio "$stored" "$rdb_bytes")"
echo "peak RSS: $((rss/1024)) MiB (goal <= 128 MiB)"
