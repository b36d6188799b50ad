#!/usr/bin/env bash
# Inference benchmark: random-weight bf16 checkpoints of published Qwen2.5 shapes. For each size,
# infer_bench reports prefill (512-token prompt) against the measured fp32 FMA peak, batch-1
# decode against the memory-bandwidth bound, and batch-8 aggregate decode against batch 1; then
# the PyTorch eager float32 reference (bench/torch_qwen2_forward.py) decodes the same prompt:
# greedy tokens must be identical, and the decode speed ratio is printed.
#
# Usage: bench/infer_bench.sh [--sizes "0.5b 1.5b"] [--workdir DIR] [--runs N] [--build DIR] [--no-torch]
set -euo pipefail
cd "$(dirname "$0")/.."
sizes="0.5b 1.5b"
workdir="${TMPDIR:-/tmp}/vlmforge-infer-bench"
runs=3
build=build
with_torch=1
while (($#)); do
  case "$1" in
    --sizes) sizes="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --no-torch) with_torch=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bench="$build/bench/infer_bench"
[ -x "$bench" ] || { echo "build first: cmake --build $build --target infer_bench vlmforge" >&2; exit 2; }
mkdir -p "$workdir"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
"$bench" --runs "$runs"  # machine limits once
ids=$(python3 -c "import random; r=random.Random(3); print(','.join(str(r.randrange(150000)) for _ in range(32)))")
for size in $sizes; do
  dir="$workdir/qwen2.5-$size"
  [ -f "$dir/config.json" ] || "$build/vlmforge" generate checkpoint --preset "qwen2.5-$size" --output_dir "$dir" >/dev/null
  echo "== qwen2.5-$size (random bf16 weights)"
  "$bench" --model "$dir" --runs "$runs" --prompt 512 --decode 32 --batch 8 | grep -v '^machine\|^limits'
  if [ "$with_torch" = 1 ]; then
    ours=$("$bench" --model "$dir" --greedy_ids "$ids" --decode 16)
    theirs=$(/usr/bin/python3 bench/torch_qwen2_forward.py --model "$dir" --ids "$ids" --new 16)
    python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
same = ours["tokens"] == theirs["tokens"]
print(f"torch {theirs['torch']} eager fp32 reference, 32-token prompt, 16 greedy tokens: "
      f"tokens {'identical' if same else 'DIFFER'}; decode {ours['decode_tok_s']:.2f} vs {theirs['decode_tok_s']:.2f} tok/s "
      f"= {ours['decode_tok_s'] / theirs['decode_tok_s']:.1f}x (target >= 3x); "
      f"prefill {ours['prefill_tok_s'] / theirs['prefill_tok_s']:.1f}x")
PY
  fi
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
