#!/usr/bin/env bash
# Sets up, builds and runs `genrec demo`: generated data -> train -> eval -> recommend.
#   scripts/demo.sh [demo options]      e.g. scripts/demo.sh --out /tmp/genrec-demo
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh genrec_cli
exec ./build/bin/genrec demo "$@"
