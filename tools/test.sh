#!/usr/bin/env bash
# Runs every test of ltxvault on a fresh machine: installs what the tests need, then runs
# them. This is the README's test command and the only thing CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Everything the tests need comes from crates.io through Cargo.lock; nothing else yet.
cargo test --release --all-targets
# Doc tests (not part of --all-targets).
cargo test --release --doc
