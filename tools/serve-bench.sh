#!/usr/bin/env bash
# The HTTP server under LiteFS-like load on this machine: `ltxvault bench serve` starts
# `ltxvault serve --auth none` on a loopback port (a child process, so its peak RSS and CPU
# are its own) and plays N simulated LiteFS primaries against it, each on one keep-alive
# connection uploading a 2-page LZ4 transaction per second (after a 16-page snapshot) and
# reading GET /pos every 10 s; at the end every database's position is checked.
# Target (issue 5): 2,000 primaries with POST /db/tx p99 <= 50 ms and zero errors.
# Usage: tools/serve-bench.sh [PRIMARIES...]   (default: 500 2000; SECONDS_PER_RUN=60 sets the length of each run)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(500 2000)
seconds=${SECONDS_PER_RUN:-60}
status=0
for n in "${counts[@]}"; do
  scratch="$PWD/target/serve-bench-$n"
  rm -rf "$scratch"
  # Exits 1 when the run saw errors; the other runs still go.
  target/release/ltxvault bench serve --data "$scratch" --primaries "$n" --seconds "$seconds" || status=1
  echo
done
exit $status
