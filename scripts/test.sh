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
echo "test: llama.cpp's llama-server (the real OpenAI-compatible upstream the engine and node tests run against)"
if [ ! -x tools/llama.cpp/bin/llama-server ]; then TARGETS=llama-server scripts/build-llama-cpp.sh; fi
echo "test: contracts (reproducible out/, forge test)"
bash contracts/check.sh
echo "test: cargo fmt --check"
cargo fmt --all -- --check
echo "test: cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "test: cargo test"
CLOISTER_REQUIRE_MODEL=1 CLOISTER_REQUIRE_ANVIL=1 CLOISTER_REQUIRE_CLIENTS=1 CLOISTER_REQUIRE_CORPUS=1 CLOISTER_REQUIRE_LLAMA_SERVER=1 CLOISTER_TEST_MODEL="$PWD/models/SmolLM2-135M-Instruct.Q4_1.gguf" \
  cargo test --locked --workspace
