#!/usr/bin/env bash
# ctest deploy_e2e_openai: installs the pinned openai client from the npm registry (npm ci, into
# the build tree so the sources stay clean) and runs e2e.mjs against a tiny checkpoint.
# Usage: run_e2e.sh VLMFORGE_BINARY SHARED_DIR WORK_DIR
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
vlmforge="$1" shared="$2" work="$3"
mkdir -p "$work"
cp "$here/package.json" "$here/package-lock.json" "$here/e2e.mjs" "$work/"
cd "$work"
npm ci --no-audit --no-fund --loglevel=error
# A minimal valid 1x1 PNG for the image cases.
printf '\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef\x00\x00\x00\x00IEND\xaeB`\x82' > pixel.png
VLMFORGE="$vlmforge" MODEL_DIR="$shared/golden/qwen2-tiny-f32" TOKENIZER="$shared/tokenizer/tokenizer.json" \
  PNG_FILE="$work/pixel.png" exec node e2e.mjs
