#!/usr/bin/env bash
# The peer of `cloister bench embeddings`: sentence-transformers on CPU torch, pinned, in
# tools/embeddings/venv (PyPI's Linux torch wheel pulls NVIDIA's CUDA wheels: several GB). Only the
# benchmark needs it; the tests do not. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-embedding-model.sh
venv=tools/embeddings/venv
if [ ! -x "$venv/bin/python" ]; then
  echo "embeddings bench: creating $venv (torch, transformers, sentence-transformers; pinned)"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  torch==2.15.0 transformers==5.24.0 sentence-transformers==6.2.0 safetensors==0.8.0 numpy==2.4.6 \
  sentencepiece==0.2.3 pyyaml==6.0.4
echo "embeddings bench: $venv ready"
