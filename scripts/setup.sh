#!/usr/bin/env bash
# Idempotent setup for vlmforge on Debian 12: installs every Debian package that the build,
# the tests, the fuzzers and the benchmarks need, then configures and builds (Release) into ./build.
# Usage: scripts/setup.sh [--no-build] [--bench-peers]
#   --bench-peers also installs the peers the benchmarks run side by side (PyTorch with OpenBLAS).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # toolchain
  g++ cmake make pkg-config
  # libraries (see README "Dependencies" for why each one is here)
  libcli11-dev nlohmann-json3-dev libsimdjson-dev libhwy-dev libpcre2-dev libutf8proc-dev libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev
  libcpp-httplib-dev libssl-dev
  # pipeline parallelism across ranks (mpirun -np N): Open MPI headers, library and launcher
  libopenmpi-dev openmpi-bin
  # the Vulkan backend (headers, loader, the GLSL compiler) and Mesa's lavapipe, a Vulkan device on the CPU
  libvulkan-dev glslc mesa-vulkan-drivers
  # tests, fuzzing, benchmarks
  libgtest-dev libgmock-dev clang libclang-rt-14-dev time bc
)

build=1
for arg in "$@"; do
  case "$arg" in
    --no-build) build=0 ;;
    # Debian's python3-torch uses the slow reference BLAS unless OpenBLAS is installed.
    --bench-peers) packages+=(python3-torch libopenblas0-pthread) ;;
    *) echo "setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

# deploy's end-to-end test drives the server with the openai npm client; Debian's nodejs + npm,
# unless a node with npm is already installed (e.g. from NodeSource, whose nodejs bundles npm).
command -v npm >/dev/null 2>&1 || packages+=(nodejs npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$build" = 1 ] || exit 0
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)"
