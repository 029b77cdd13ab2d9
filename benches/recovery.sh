#!/usr/bin/env bash
# Issue 14's figures side by side, from one run: a whole generation imported
# through the replication feed and with RESTORE against native RDB load
# (2.5 M keys); the daemon's RPO (WAIT 1 after a write) under 20k writes/s
# into file:// and into Azurite; point-in-time restore (base + 60 s of
# writes) against native load of the final state; peak RSS on every path.
#   benches/recovery.sh [KEYS]     (about 30 minutes on 2 cores)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/redvault-recovery.XXXXXX)
trap 'rm -rf "$out"' EXIT
benches/import-vs-native.sh "${1:-2500000}" | tee "$out/import"
benches/daemon-rpo.sh | tee "$out/file"
STORE=azurite benches/daemon-rpo.sh | tee "$out/azurite"
# pick FILE PATTERN: the first line of that run matching PATTERN.
pick() { grep -m1 -- "$2" "$out/$1" || echo "(no line matching '$2')"; }
echo
echo "== recovery figures, one run: $(date -u +%F), $(nproc) cores, $(redis-server --version | cut -d' ' -f3) =="
echo "import (whole generation, file://):"
echo "  $(pick import 'RATIO import --via replication')"
echo "  $(pick import 'RATIO import --via restore')"
echo "  $(pick import 'peak RSS: replication')"
echo "  $(pick import 'import --via replication digest')"
echo "daemon under load, file://:"
echo "  $(pick file 'RPO (write')   (goal p99 <= 0.100s)"
echo "  $(pick file 'daemon CPU')"
echo "  $(pick file 'RATIO restore --via replication')"
echo "  $(pick file 'RATIO restore --via restore')"
echo "  $(pick file 'restore --via replication (base')"
echo "  $(pick file 'restore --via restore (base')"
echo "  $(pick file 'CPU during restore')"
echo "daemon under load, Azurite:"
echo "  $(pick azurite 'RPO (write')   (goal p99 <= 0.250s)"
echo "  $(pick azurite 'daemon CPU')"
echo "  $(pick azurite 'RATIO restore --via replication')"
echo "  $(pick azurite 'restore --via replication (base')"
echo "  $(pick azurite 'CPU during restore')"
