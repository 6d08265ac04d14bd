#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite (GoogleTest via CTest).
# Tests that need ../shared/data skip with a message when it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
bash scripts/build.sh
built=$(date +%s)
ctest --test-dir build --output-on-failure -j "${JOBS:-$(nproc)}"
echo "build: $((built - start)) s, tests: $(( $(date +%s) - built )) s"
