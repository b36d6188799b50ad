#!/usr/bin/env bash
# Qwen2.5-VL image benchmark on a random-weight Qwen2.5-VL-3B-shaped checkpoint (the full 32-block
# vision tower; the language model cut to --lm_layers decoder layers to keep the files small):
#   1. one 1280x960 JPEG at MAX_PIXELS=802816: decode / preprocess / vision encode times, images/s,
#      the tower's GFLOP/s, and the image cache's hit cost against a miss (target <= 1%);
#   2. the PyTorch eager float32 reference (bench/torch_qwen25vl_vision.py) on the same pixel values,
#      same thread count: embeddings compared, encode time ratio;
#   3. `vlmforge infer` on that image: the time split preprocess / encode / prefill / decode;
#   4. --val_dataset rows with distinct images, with and without --overlap_images: wall time ratio.
# The machine is shared: the load average is printed before and after.
#
# Usage: bench/vision_bench.sh [--workdir DIR] [--runs N] [--build DIR] [--lm_layers N] [--no-torch]
set -euo pipefail
cd "$(dirname "$0")/.."
workdir="${TMPDIR:-/tmp}/vlmforge-vision-bench"
runs=1
build=build
lm_layers=8
with_torch=1
while (($#)); do
  case "$1" in
    --workdir) workdir="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    --lm_layers) lm_layers="$2"; shift 2 ;;
    --no-torch) with_torch=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bench="$build/bench/vision_bench"
[ -x "$bench" ] || { echo "build first: cmake --build $build --target vision_bench vlmforge" >&2; exit 2; }
mkdir -p "$workdir"
threads=$(nproc)
echo "load: $(cut -d' ' -f1-3 /proc/loadavg) on $threads cores"
model="$workdir/qwen2.5-vl-3b-L$lm_layers"
[ -f "$model/config.json" ] || "$build/vlmforge" generate checkpoint --preset qwen2.5-vl-3b --num_layers "$lm_layers" \
  --output_dir "$model" --tokenizer ../shared/tokenizer/tokenizer.json >/dev/null
"$bench" --write_jpeg "$workdir/photo.jpg" --size 1280x960

echo "== vision encoding, MAX_PIXELS=802816 (median of $runs)"
ours=$(MAX_PIXELS=802816 "$bench" --model "$model" --image "$workdir/photo.jpg" --runs "$runs" --hits 200 --dump "$workdir/photo")
echo "$ours"
if [ "$with_torch" = 1 ]; then
  grid=$(python3 -c "import json,sys; print(','.join(map(str, json.loads(sys.argv[1])['grid'])))" "$ours")
  theirs=$(/usr/bin/python3 bench/torch_qwen25vl_vision.py --model "$model" --dump "$workdir/photo" --grid "$grid" \
    --runs "$runs" --threads "$threads")
  echo "$theirs"
  python3 - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print(f"vision tower, {ours['tokens']} tokens: vlmforge {ours['encode_s']:.2f} s vs torch {theirs['torch']} eager fp32 "
      f"{theirs['encode_s']:.2f} s = {theirs['encode_s'] / ours['encode_s']:.2f}x; embeddings max |diff| "
      f"{theirs['max_abs_diff']:.2e} (largest |value| {theirs['max_abs_value']:.2e}); "
      f"cache hit {ours['hit_s'] * 1e3:.3f} ms = {100 * ours['hit_over_miss']:.4f}% of a miss (target <= 1%)")
PY
fi

echo "== infer time split (one image, MAX_PIXELS=802816, 16 new tokens)"
MAX_PIXELS=802816 "$build/vlmforge" infer --model "$model" --query "<image>Describe the image." \
  --images "$workdir/photo.jpg" --temperature 0 --max_new_tokens 16 --stream false 2>&1 >/dev/null | grep '^\[stats\]'

echo "== --val_dataset overlap (4 rows, distinct images, MAX_PIXELS=200704, 32 new tokens, batch 1)"
rows="$workdir/rows.jsonl"
: > "$rows"
for i in 1 2 3 4; do
  "$bench" --write_jpeg "$workdir/row$i.jpg" --size "$((600 + 40 * i))x$((480 + 20 * i))"
  echo "{\"query\": \"<image>What is shown?\", \"images\": [\"row$i.jpg\"]}" >> "$rows"
done
declare -A wall
for overlap in false true; do
  start=$(date +%s.%N)
  MAX_PIXELS=200704 "$build/vlmforge" infer --model "$model" --val_dataset "$rows" --result_path "$workdir/out-$overlap.jsonl" \
    --temperature 0 --max_new_tokens 32 --overlap_images "$overlap" 2>&1 | grep '^\[stats\]' || true
  wall[$overlap]=$(echo "$(date +%s.%N) - $start" | bc)
  echo "overlap_images=$overlap: ${wall[$overlap]} s"
done
cmp -s <(python3 -c "import json,sys; [print(json.loads(l)['response']) for l in open(sys.argv[1])]" "$workdir/out-false.jsonl") \
       <(python3 -c "import json,sys; [print(json.loads(l)['response']) for l in open(sys.argv[1])]" "$workdir/out-true.jsonl") \
  && echo "responses identical with and without overlap" || echo "responses DIFFER"
echo "overlap gain: $(echo "scale=3; ${wall[false]} / ${wall[true]}" | bc)x wall time"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
