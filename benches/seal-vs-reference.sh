#!/usr/bin/env bash
# End-to-end seal/unseal bench against the reference tools, on a real RDB.
#   benches/seal-vs-reference.sh [KEYS]     (default 2,500,000 keys: an RDB over 1 GB)
# Prints: seal time vs `zstd -1 -T2`, unseal rate, AES-GCM vs `openssl speed`,
# bytes stored vs RDB size, and peak RSS sealing a 2x RDB stream from stdin.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/common.sh
KEYS=${1:-2500000}
cargo build --release --quiet
RV=target/release/redvault
work=$(mktemp -d /tmp/redvault-bench.XXXXXX)
trap 'stop_redis; rm -rf "$work"' EXIT

start_redis "$work"
echo "filling redis with $KEYS keys..."
fill_redis "$KEYS"
redis-cli -p "$REDIS_PORT" --rdb "$work/dump.rdb" >/dev/null
stop_redis
rdb_bytes=$(stat -c %s "$work/dump.rdb")
$RV keys generate --bits 3072 --out "$work/kek.pem" >/dev/null 2>&1

cat "$work/dump.rdb" > /dev/null # warm the page cache
timed zs _ zstd -1 -T2 -q -c "$work/dump.rdb" -o /dev/null -f
zstd_bytes=$(zstd -1 -T2 -q -c "$work/dump.rdb" | wc -c)
timed ss srss $RV seal --kek "$work/kek.pub.pem" "$work/dump.rdb" "$work/dump.rdb.rv"
sealed_bytes=$(stat -c %s "$work/dump.rdb.rv")
timed us urss $RV unseal --kek "$work/kek.pem" "$work/dump.rdb.rv" /dev/null
timed bs brss sh -c "cat '$work/dump.rdb' '$work/dump.rdb' | $RV seal --kek '$work/kek.pub.pem' - /dev/null"
ossl=$(openssl speed -elapsed -seconds 2 -bytes 16384 -evp aes-256-gcm 2>/dev/null | awk '/^AES-256-GCM/ {sub("k","",$2); print $2*1000}')

mb() { python3 -c "import sys; print('%.0f' % (float(sys.argv[1])/1e6))" "$1"; }
rate() { python3 -c "import sys; print('%.0f' % (float(sys.argv[1])/float(sys.argv[2])/1e6))" "$1" "$2"; }
echo
echo "RDB: $(mb "$rdb_bytes") MB ($KEYS keys)"
echo "zstd -1 -T2:        ${zs}s  $(rate "$rdb_bytes" "$zs") MB/s  -> $(mb "$zstd_bytes") MB"
echo "redvault seal:      ${ss}s  $(rate "$rdb_bytes" "$ss") MB/s  -> $(mb "$sealed_bytes") MB, peak RSS $((srss/1024)) MiB"
echo "redvault unseal:    ${us}s  $(rate "$rdb_bytes" "$us") MB/s, peak RSS $((urss/1024)) MiB"
echo "seal 2x RDB stream from stdin: peak RSS $((brss/1024)) MiB"
echo "openssl aes-256-gcm 16 KiB: $(mb "$ossl") MB/s (compare: cargo bench --bench seal_open -- aes-256-gcm)"
echo
echo "RATIO seal throughput / zstd -1 -T2 throughput: $(ratio "$zs" "$ss")  (goal >= 0.8)"
echo "RATIO stored bytes / RDB bytes: $(ratio "$sealed_bytes" "$rdb_bytes")  (zstd alone: $(ratio "$zstd_bytes" "$rdb_bytes"))"
