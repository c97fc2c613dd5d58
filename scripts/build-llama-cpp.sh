#!/usr/bin/env bash
# Builds llama.cpp's own `llama-bench` and `llama-server` (the peers for `cloister bench engine`) from
# the llama.cpp source vendored in the PyPI sdist of llama-cpp-python (the llama-cpp-sys-2 crate ships
# llama.cpp without the server's sources). Built the way llama.cpp builds by default (GGML_NATIVE=ON);
# PORTABLE=1 builds for x86-64-v3 (AVX2), the ISA level of our own build. TARGETS picks the tools
# (default: both). Output: tools/llama.cpp/bin/llama-bench, tools/llama.cpp/bin/llama-server.
# QUICK=1 is the test command's build: llama-server only, its own build folder, ggml optimised as
# above and the rest at -O0 (scripts/llama-cc-quick.sh), well under half the compile time.
# Output: tools/llama.cpp/test-bin/llama-server. Never benchmark that one.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
root=tools/llama.cpp
mkdir -p "$root"
if [ ! -d "$root/venv" ]; then python3 -m venv "$root/venv"; fi
"$root/venv/bin/pip" install --quiet --disable-pip-version-check scikit-build-core cmake ninja
if [ ! -d "$root/src" ]; then
  tmp=$(mktemp -d)
  "$root/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --no-binary :all: \
    --no-build-isolation "llama-cpp-python==$VERSION" -d "$tmp"
  tar -xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
  mv "$tmp"/llama_cpp_python-*/vendor/llama.cpp "$root/src"
  rm -rf "$tmp"
fi
native=ON; extra=(); build=$root/build; bin=$root/bin
if [ "${QUICK:-0}" = 1 ]; then
  build=$root/build-quick; bin=$root/test-bin; TARGETS=llama-server
  extra+=(-DCMAKE_C_COMPILER_LAUNCHER="$PWD/scripts/llama-cc-quick.sh" -DCMAKE_CXX_COMPILER_LAUNCHER="$PWD/scripts/llama-cc-quick.sh")
fi
if [ "${PORTABLE:-0}" = 1 ]; then native=OFF; extra+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON); fi
# No AMX: on a CPU with AMX, -march=native compiles in ggml's AMX matmul (ggml-cpu/amx), and in this
# vendored version it dies in `ldtilecfg` (SIGSEGV) at the first Q4_1 matmul, seen on a Sapphire
# Rapids-class VM where AMX itself works (a tile config loads in a standalone test). Our own engine is
# built for x86-64-v3 and never runs AMX either, so the peer stays comparable.
no_amx="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
extra+=(-DCMAKE_C_FLAGS="$no_amx" -DCMAKE_CXX_FLAGS="$no_amx")
export PATH="$PWD/$root/venv/bin:$PATH"
echo "llama.cpp: configuring (llama-cpp-python $VERSION's vendored llama.cpp, GGML_NATIVE=$native)"
cmake -S "$root/src" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
  -DGGML_NATIVE=$native -DBUILD_SHARED_LIBS=OFF "${extra[@]}" >/dev/null
targets=(${TARGETS:-llama-bench llama-server})
echo "llama.cpp: building ${targets[*]} in $build (several minutes on 2 cores)"
cmake --build "$build" --target "${targets[@]}" -j "$(nproc)" >/dev/null
mkdir -p "$bin"
for target in "${targets[@]}"; do
  cp "$build/bin/$target" "$bin/$target"
  echo "llama.cpp: $bin/$target ready"
done
