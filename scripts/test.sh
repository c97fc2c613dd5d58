#!/usr/bin/env bash
# All tests: the contracts (recompile reproduces contracts/out, forge unit/fuzz/invariant/gas tests),
# format, lints, and every crate's tests with the real models, a real anvil, a real llama.cpp
# llama-server (built once per checkout) and the attestation corpus
# (../shared/testdata/attestation; tests that need it skip with a message where it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
# One-shot builds gain nothing from incremental compilation, and its caches cost tens of GiB.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# Each step says how long the run has taken so far (a cold run should stay near 30 minutes).
step() { echo "test: [$((SECONDS / 60))m$((SECONDS % 60))s] $*"; }
scripts/setup.sh
# llama-cpp-sys-2 compiles llama.cpp in its build script, once for clippy's check and once for the
# test build (their build-script units differ), with the same commands in two build folders. ccache
# (its cache in this checkout: a fresh clone starts empty) turns the second compile into cache hits:
# the folder is kept out of the hash and paths are made relative to the compile's folder, which
# sits at the same depth in both.
if command -v ccache >/dev/null 2>&1; then
  export CCACHE_DIR="${CCACHE_DIR:-$PWD/tools/ccache}" CCACHE_BASEDIR=/ CCACHE_NOHASHDIR=1
  export CMAKE_C_COMPILER_LAUNCHER=ccache CMAKE_CXX_COMPILER_LAUNCHER=ccache
fi
step "real OpenAI clients for the proxy tests (pinned openai in tools/pyclients/venv)"
scripts/setup-test-clients.sh
# llama.cpp's llama-server, the real OpenAI-compatible upstream the engine and node tests run
# against: its test build (QUICK=1, scripts/build-llama-cpp.sh) compiles in the background while the
# contracts and the Rust code build, and the tests wait for it.
llama_server=tools/llama.cpp/test-bin/llama-server
llama_log=tools/llama.cpp/test-build.log
llama_pid=""
if [ ! -x "$llama_server" ]; then
  step "building llama-server in the background (log: $llama_log)"
  mkdir -p tools/llama.cpp
  QUICK=1 setsid nice -n 5 scripts/build-llama-cpp.sh >"$llama_log" 2>&1 &
  llama_pid=$!
  # A failing step stops the background build too (it runs in its own process group).
  trap 'if [ -n "$llama_pid" ]; then kill -- "-$llama_pid" 2>/dev/null || true; fi' EXIT
fi
step "contracts (reproducible out/, forge test)"
bash contracts/check.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
step "cargo test (build)"
cargo test --locked --workspace --no-run
if [ -n "$llama_pid" ]; then
  step "waiting for the llama-server build"
  if ! wait "$llama_pid"; then
    tail -n 40 "$llama_log"
    step "the llama-server build failed (log above: $llama_log)" >&2
    exit 1
  fi
  llama_pid=""
  tail -n 1 "$llama_log"
fi
step "cargo test"
CLOISTER_LLAMA_SERVER="$PWD/$llama_server" CLOISTER_REQUIRE_MODEL=1 CLOISTER_REQUIRE_ANVIL=1 CLOISTER_REQUIRE_CLIENTS=1 CLOISTER_REQUIRE_CORPUS=1 CLOISTER_REQUIRE_LLAMA_SERVER=1 CLOISTER_TEST_MODEL="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  cargo test --locked --workspace
step "done"
