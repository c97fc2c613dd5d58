#!/usr/bin/env bash
# All tests: the contracts (recompile reproduces contracts/out, forge unit/fuzz/invariant/gas tests),
# format, lints, and every crate's tests with the real models, a real anvil, a real llama.cpp
# llama-server (built once per checkout) and the attestation corpus
# (../shared/testdata/attestation; tests that need it skip with a message where it is absent).
set -euo pipefail
cd "$(dirname "$0")/.."
# One-shot builds gain nothing from incremental compilation, and its caches cost tens of GiB.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
scripts/setup.sh
echo "test: real OpenAI clients for the proxy tests (pinned openai in tools/pyclients/venv)"
scripts/setup-test-clients.sh
# llama.cpp's llama-server, the real OpenAI-compatible upstream the engine and node tests run
# against: its test build (QUICK=1, scripts/build-llama-cpp.sh) compiles in the background while the
# contracts and the Rust code build, and the tests wait for it.
llama_server=tools/llama.cpp/test-bin/llama-server
llama_log=tools/llama.cpp/test-build.log
llama_pid=""
if [ ! -x "$llama_server" ]; then
  echo "test: building llama-server in the background (log: $llama_log)"
  mkdir -p tools/llama.cpp
  QUICK=1 setsid nice -n 5 scripts/build-llama-cpp.sh >"$llama_log" 2>&1 &
  llama_pid=$!
  # A failing step stops the background build too (it runs in its own process group).
  trap 'if [ -n "$llama_pid" ]; then kill -- "-$llama_pid" 2>/dev/null || true; fi' EXIT
fi
echo "test: contracts (reproducible out/, forge test)"
bash contracts/check.sh
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "test: cargo test (build)"
cargo test --locked --workspace --no-run
if [ -n "$llama_pid" ]; then
  echo "test: waiting for the llama-server build"
  if ! wait "$llama_pid"; then
    tail -n 40 "$llama_log"
    echo "test: the llama-server build failed (log above: $llama_log)" >&2
    exit 1
  fi
  llama_pid=""
  tail -n 1 "$llama_log"
fi
echo "test: cargo test"
CLOISTER_LLAMA_SERVER="$PWD/$llama_server" CLOISTER_REQUIRE_MODEL=1 CLOISTER_REQUIRE_ANVIL=1 CLOISTER_REQUIRE_CLIENTS=1 CLOISTER_REQUIRE_CORPUS=1 CLOISTER_REQUIRE_LLAMA_SERVER=1 CLOISTER_TEST_MODEL="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  cargo test --locked --workspace
