#!/usr/bin/env bash
# Sets everything up (scripts/setup.sh), runs the whole test suite (ctest), then a bounded,
# seeded libFuzzer session on the safetensors header parser. Exit status is non-zero on failure.
# The same for check-data's row parser (reader, simdjson, nlohmann fallback, row checks), image decoding,
# deploy's request parser (OpenAI JSON bodies, image data: URLs) and its HTTP layer (heads, framing, bodies).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== ctest"
(cd build && ctest --output-on-failure -j"$(nproc)")

# Sanitized unit tests: ASan+UBSan on every test binary (the CLI tests run the sanitized vlmforge), then
# TSan on the thread pool (tests/util) and the scheduler and server (tests/server). Any finding fails.
echo "== ASan+UBSan: unit tests"
# Without the Vulkan backend: lavapipe's JIT-compiled shaders and Mesa are not instrumented; the
# Release pass runs the Vulkan tests.
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DVLMFORGE_SANITIZE=address,undefined -DVLMFORGE_BUILD_BENCH=OFF \
  -DVLMFORGE_VULKAN=OFF -DVLMFORGE_MPI=OFF >/dev/null
cmake --build build-asan -j"$(nproc)" >/dev/null
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --output-on-failure -j"$(nproc)" -E '^deploy_e2e_openai$')  # the npm end-to-end run is left to the Release pass
echo "== TSan: thread pool, scheduler and server tests"
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DVLMFORGE_SANITIZE=thread -DVLMFORGE_BUILD_BENCH=OFF \
  -DVLMFORGE_VULKAN=OFF -DVLMFORGE_MPI=OFF >/dev/null
cmake --build build-tsan -j"$(nproc)" --target vlmforge test_util test_server >/dev/null
# Left out: a wall-clock bound (a 16 MiB prompt refused within 5 s) that TSan's slowdown alone exceeds.
for t in test_util test_server; do
  TSAN_OPTIONS=halt_on_error=1 build-tsan/tests/$t --gtest_brief=1 \
    --gtest_filter=-DeployLimits.OversizedPromptsAreRefusedBeforeTokenizing
done

echo "== fuzz: safetensors header parser (bounded, seeded)"
CXX=clang++ cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DVLMFORGE_FUZZ=ON \
  -DVLMFORGE_BUILD_TESTS=OFF -DVLMFORGE_BUILD_BENCH=OFF >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz_safetensors_header >/dev/null
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
# Seed with real files: a generated checkpoint shard and the golden adapters when present.
build/vlmforge generate checkpoint --preset tiny --output_dir "$corpus/model" >/dev/null
mkdir -p "$corpus/seeds"
cp "$corpus/model/model.safetensors" "$corpus/seeds/"
for f in ../shared/golden/lora/*/adapter_model.safetensors; do [ -f "$f" ] && cp "$f" "$corpus/seeds/$(basename "$(dirname "$f")").safetensors"; done
build-fuzz/fuzz/fuzz_safetensors_header "$corpus/seeds" -seed=1 -runs=1000000 -max_len=8192 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 3

echo "== fuzz: check-data row parser (bounded, seeded)"
cmake --build build-fuzz -j"$(nproc)" --target fuzz_row_parser >/dev/null
mkdir -p "$corpus/rows" "$corpus/rows-work"
printf '%s\n' '{"messages":[{"role":"system","content":"s"},{"role":"user","content":"<image>see a.png"},{"role":"assistant","content":"x</s>"}],"images":["a.png",{"path":"b.jpg"}],"image":"c.gif"}' \
  '{"conversations":[{"from":"human","value":"q"},{"from":"gpt","value":"a"}],"videos":[{"bytes":"AA=="}]}' \
  '{"query":"q","response":"r","history":[["a","b"]],"system":"s","n":[1,-0,2.5e3,18446744073709551616,"\u00e9"]}' \
  '{"instruction":"i","input":"n","output":"o","audios":"x.wav"}' >"$corpus/rows/rows.jsonl"
printf '[{"messages":[{"role":"user","content":"q"}]},\n {"a":[1,{"b":null}]}, 3]' >"$corpus/rows/array.json"
build-fuzz/fuzz/fuzz_row_parser "$corpus/rows-work" "$corpus/rows" -seed=1 -runs=20000 -max_len=8192 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 3

echo "== fuzz: deploy request parser (bounded, seeded)"
cmake --build build-fuzz -j"$(nproc)" --target fuzz_deploy_request >/dev/null
mkdir -p "$corpus/requests"
printf '%s' '0{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"}}]}],"stream":true,"stream_options":{"include_usage":true},"logprobs":true,"top_logprobs":2,"stop":["a"]}' > "$corpus/requests/chat"
printf '%s' '1{"model":"m","prompt":[1,2,3],"logprobs":2,"max_tokens":5,"temperature":0.5,"top_p":0.9,"seed":3}' > "$corpus/requests/completion"
build-fuzz/fuzz/fuzz_deploy_request "$corpus/requests" -seed=1 -runs=300000 -max_len=4096 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 3
echo "== fuzz: deploy HTTP layer: heads, framing, bodies (bounded, seeded)"
cmake --build build-fuzz -j"$(nproc)" --target fuzz_deploy_http >/dev/null
mkdir -p "$corpus/http"
printf 'GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' > "$corpus/http/pipelined"
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello' > "$corpus/http/length"
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n' > "$corpus/http/chunked"
printf 'POST /v1/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000\r\n\r\n' > "$corpus/http/too-large"
# Bounded in time too: a request whose body never completes waits out its 1 s body deadline.
build-fuzz/fuzz/fuzz_deploy_http "$corpus/http" -seed=1 -runs=20000 -max_total_time=120 -max_len=2048 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 3
echo "== fuzz: image decoding (bounded, seeded)"
cmake --build build-fuzz -j"$(nproc)" --target fuzz_image_decode >/dev/null
mkdir -p "$corpus/images"
# Seeds: a PNG (zlib), the same PNG with an eXIf orientation (so exif_transpose turns it), a 24-bit
# BMP and a 1x1 GIF, written with the Python standard library.
python3 - "$corpus/images" <<'PY'
import struct, sys, zlib
out = sys.argv[1]
def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
raw = b"".join(b"\0" + bytes((x * 9 + y) % 256 for x in range(3 * 5)) for y in range(4))
ihdr = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 4, 8, 2, 0, 0, 0))
rest = chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")
open(f"{out}/a.png", "wb").write(ihdr + rest)
# TIFF header, then IFD0 with one entry: Orientation (0x0112), SHORT, 1 value, 6 (rotate 90° clockwise).
exif = b"II*\0" + struct.pack("<IHHHIHHI", 8, 1, 0x0112, 3, 1, 6, 0, 0)
open(f"{out}/turned.png", "wb").write(ihdr + chunk(b"eXIf", exif) + rest)
pixels = bytes(range(48))
open(f"{out}/a.bmp", "wb").write(b"BM" + struct.pack("<IIIIiiHHIIiiII", 54 + len(pixels), 0, 54, 40, 4, 4, 1, 24, 0,
                                                     len(pixels), 0, 0, 0, 0) + pixels)
open(f"{out}/a.gif", "wb").write(b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + bytes.fromhex("000000ffffff")
                                + bytes.fromhex("21f9040100000000") + b"," + struct.pack("<HHHHB", 0, 0, 1, 1, 0)
                                + bytes.fromhex("0202440100") + b";")
PY
# Also bounded in time: inputs declaring screens of tens of megapixels (within the bomb limit) are
# legitimately slow to fill under ASan, and one session met many more of them than another.
build-fuzz/fuzz/fuzz_image_decode "$corpus/images" -seed=1 -runs=300000 -max_total_time=180 -max_len=16384 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 3

echo "== fuzz: --devices / --max_memory / visible devices / device maps (bounded, seeded)"
cmake --build build-fuzz -j"$(nproc)" --target fuzz_device_flags >/dev/null
mkdir -p "$corpus/flags"
printf '\x00\x00cpu:0,cpu:1,npu:0-7' > "$corpus/flags/devices"
printf '\x01\x00cpu:0=2GiB,1=5GB' > "$corpus/flags/max_memory"
printf '\x02\x05 2,0,1' > "$corpus/flags/cuda"
printf '\x03\x08 1,2,3' > "$corpus/flags/ascend"
printf '\x04\x00{"model.embed_tokens":"cpu:0","model.layers.0":1,"model":"cpu:2","lm_head":0}' > "$corpus/flags/map"
build-fuzz/fuzz/fuzz_device_flags "$corpus/flags" -seed=1 -runs=300000 -max_len=512 -rss_limit_mb=2048 \
  -artifact_prefix=build-fuzz/ 2>&1 | tail -n 1
echo "fuzz: passed"
