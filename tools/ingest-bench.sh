#!/usr/bin/env bash
# Durable ingest on this machine, both I/O engines side by side (issue targets in brackets):
#   small:  2 x 4 KiB pages, 100 databases, 16 writers, as fast as possible  [>= 20,000 uploads/s]
#   paced:  the same at an offered 1,000 uploads/s                           [p99 ack <= 10 ms]
#   large:  1,000 x 4 KiB pages, 4 databases, 4 writers                      [>= 300 MiB/s]
# Each run uses a fresh vault in a scratch directory on the same disk as the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/ltxvault
scratch=$(mktemp -d "$PWD/target/ingest-bench.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
printf '%-6s %-6s %12s %10s %10s %10s %10s\n' case engine uploads/s MiB/s p50_us p99_us max_us
for io in std uring; do
  for case in small paced large; do
    case $case in
      small) args=(--uploads 30000) ;;
      paced) args=(--uploads 10000 --rate 1000) ;;
      large) args=(--pages 1000 --uploads 400 --writers 4 --dbs 4) ;;
    esac
    $bin bench ingest --data "$scratch/$io-$case" --io "$io" --json "${args[@]}" |
      python3 -c 'import json,sys; r=json.load(sys.stdin); l=r["latency_us"]; print("%-6s %-6s %12.0f %10.1f %10d %10d %10d" % (sys.argv[1], r["engine"][:6], r["uploads_per_sec"], r["mib_per_sec"], l["p50"], l["p99"], l["max"]))' "$case"
  done
done
