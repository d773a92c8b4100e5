#!/usr/bin/env bash
# Koji benchmark against the hub double: HTTP requests per polling round
# with 50 concurrent tasks (must be 1), and the build stage's overhead
# excluding rpmbuild time for 10 repositories x 3 targets.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
cargo build -q --release -p patchline-kojihub
cargo build -q --release -p patchline --bin patchline --example koji_bench
target/release/examples/koji_bench target/release/patchline-kojihub target/release/patchline
