#!/usr/bin/env bash
# Installs genrec's build dependencies from Debian 12 packages.
# Idempotent: packages already installed are skipped, and apt-get is not called at all
# when nothing is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  libtorch-dev
  libfaiss-dev libopenblas-dev
  nlohmann-json3-dev
  libtomlplusplus-dev
  libcli11-dev
  libgtest-dev libgmock-dev
  libbenchmark-dev
  zlib1g-dev
  librocksdb-dev libcpp-httplib-dev
  wrk
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
