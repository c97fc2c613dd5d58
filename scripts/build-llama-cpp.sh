#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench` (the peer for `cloister bench engine`) from the llama.cpp source
# that the llama-cpp-sys-2 crate vendors: the same llama.cpp revision our built-in engine links, built
# the way llama.cpp builds by default (GGML_NATIVE=ON). PORTABLE=1 builds for x86-64-v3 (AVX2) instead,
# the ISA level of our own build. Output: tools/llama.cpp/bin/llama-bench.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null || scripts/setup.sh
cargo fetch --locked >/dev/null
src=$(cargo metadata --format-version 1 --locked | python3 -c '
import json, os, sys
meta = json.load(sys.stdin)
pkg = next(p for p in meta["packages"] if p["name"] == "llama-cpp-sys-2")
print(os.path.join(os.path.dirname(pkg["manifest_path"]), "llama.cpp"))')
native=ON; extra=()
if [ "${PORTABLE:-0}" = 1 ]; then native=OFF; extra=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON); fi
build=tools/llama.cpp/build
echo "llama.cpp: configuring from $src (GGML_NATIVE=$native)"
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DGGML_NATIVE=$native \
  -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
  -DLLAMA_BUILD_TOOLS=ON "${extra[@]}" >/dev/null
echo "llama.cpp: building llama-bench (a few minutes on 2 cores)"
cmake --build "$build" --target llama-bench -j "$(nproc)" >/dev/null
mkdir -p tools/llama.cpp/bin
cp "$build/bin/llama-bench" tools/llama.cpp/bin/llama-bench
echo "llama.cpp: tools/llama.cpp/bin/llama-bench ready"
