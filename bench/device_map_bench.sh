#!/usr/bin/env bash
# Device-boundary cost on decode (issue #6: <= 5%): a random-weight Qwen2.5-0.5B checkpoint
# decoded on the host, on one cpu device, and across N cpu devices (bench/device_map_bench.cc).
# Usage: bench/device_map_bench.sh [--preset qwen2.5-0.5b] [--devices 3] [--steps 200]
#                                  [--workdir DIR] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=qwen2.5-0.5b
devices=3
steps=200
workdir="${TMPDIR:-/tmp}/vlmforge-device-map-bench"
build=build
while (($#)); do
  case "$1" in
    --preset) preset="$2"; shift 2 ;;
    --devices) devices="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bench="$build/bench/device_map_bench"
[ -x "$bench" ] || { echo "build first: cmake --build $build --target device_map_bench vlmforge" >&2; exit 2; }
dir="$workdir/$preset"
[ -f "$dir/config.json" ] || "$build/vlmforge" generate checkpoint --preset "$preset" --output_dir "$dir" >/dev/null
echo "== $preset (random bf16 weights), uptime: $(uptime)"
"$bench" --model "$dir" --devices "$devices" --steps "$steps"
