#!/usr/bin/env bash
# The main job: build Cloister, start a node with the built-in engine (SmolLM2) and a simulated TEE,
# ask it a question, verify the attestation and the signed answer, print the proof.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "demo: building (release) ..."
cargo build --release --locked -p cloister-cli
exec target/release/cloister demo "$@"
