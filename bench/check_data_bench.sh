#!/usr/bin/env bash
# check-data throughput: (1) MB/s over a text-only JSONL (no images), (2) image headers/s over a
# dataset whose rows each name a distinct small PNG; both beside the baseline of a plain Python
# json-module loop over the same file (Debian's /usr/bin/python3: json.loads per line; for the
# image set, plus opening each image and reading its first 32 bytes).
#
# Usage: bench/check_data_bench.sh [--rows N] [--images N] [--threads N] [--workdir DIR] [--build DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
rows=200000
images=20000
threads=0
workdir="${TMPDIR:-/tmp}/vlmforge-check-data-bench"
build=build
while (($#)); do
  case "$1" in
    --rows) rows="$2"; shift 2 ;;
    --images) images="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --workdir) workdir="$2"; shift 2 ;;
    --build) build="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
bin="$build/vlmforge"
[ -x "$bin" ] || { echo "build first: cmake --build $build --target vlmforge" >&2; exit 2; }
mkdir -p "$workdir"
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)  cores: $(nproc)"

/usr/bin/python3 - "$workdir" "$rows" "$images" <<'PY'
import json, os, struct, sys, zlib
work, rows, images = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
words = "the quick brown fox jumps over a lazy dog while 模型 描述 这张 图片".split()
with open(os.path.join(work, "text.jsonl"), "w") as f:
    for i in range(rows):
        user = " ".join(words[(i + k) % len(words)] for k in range(20 + i % 40))
        answer = " ".join(words[(i * 3 + k) % len(words)] for k in range(60 + i % 80))
        f.write(json.dumps({"messages": [{"role": "system", "content": "You are helpful."},
                                         {"role": "user", "content": f"{user} #{i}"},
                                         {"role": "assistant", "content": answer}]}, ensure_ascii=False) + "\n")
os.makedirs(os.path.join(work, "img"), exist_ok=True)
def png(w, h):
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
with open(os.path.join(work, "images.jsonl"), "w") as f:
    for i in range(images):
        name = f"img/{i}.png"
        with open(os.path.join(work, name), "wb") as p:
            p.write(png(200 + i % 1800, 150 + i % 1200))
        f.write(json.dumps({"messages": [{"role": "user", "content": "<image>describe"},
                                         {"role": "assistant", "content": f"image {i}"}], "images": [name]}) + "\n")
PY

seconds() { /usr/bin/time -f "%e" "$@" 2>&1 >/dev/null | tail -1; }
mb=$(du -m "$workdir/text.jsonl" | cut -f1)
bytes=$(stat -c %s "$workdir/text.jsonl")
cat "$workdir/text.jsonl" > /dev/null  # page cache warm for both
t=$(seconds "$bin" check-data --json --threads "$threads" "$workdir/text.jsonl")
p=$(seconds /usr/bin/python3 -c 'import json,sys
for line in open(sys.argv[1], encoding="utf-8"): json.loads(line)' "$workdir/text.jsonl")
echo "text JSONL: $rows rows, $bytes bytes"
awk -v b="$bytes" -v t="$t" -v p="$p" 'BEGIN { printf "  vlmforge check-data: %.2f s  %.1f MB/s\n  python3 json.loads loop: %.2f s  %.1f MB/s\n", t, b/1e6/t, p, b/1e6/p }'

t=$(seconds "$bin" check-data --json --threads "$threads" "$workdir/images.jsonl")
p=$(seconds /usr/bin/python3 -c 'import json,os,sys
base=os.path.dirname(sys.argv[1])
for line in open(sys.argv[1], encoding="utf-8"):
    for path in json.loads(line)["images"]:
        with open(os.path.join(base, path), "rb") as f: f.read(32)' "$workdir/images.jsonl")
echo "image headers: $images PNG files (page cache warm after generation)"
awk -v n="$images" -v t="$t" -v p="$p" 'BEGIN { printf "  vlmforge check-data: %.2f s  %.0f images/s\n  python3 json + open/read(32): %.2f s  %.0f images/s\n", t, n/t, p, n/p }'
