#!/usr/bin/env bash
# Installs the real third-party clients the tests drive, pinned, in a virtual environment at
# tools/pyclients/venv (git-ignored): the official OpenAI Python SDK (proxy tests) and eth-account
# (tools/independent_check.py, the independent check of reports and signatures). The Rust tests find
# it there, or use the interpreter in $CLOISTER_PYTHON; without either they skip, unless
# CLOISTER_REQUIRE_CLIENTS=1.
set -euo pipefail

OPENAI_VERSION="3.57.0"
ETH_ACCOUNT_VERSION="0.13.7"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/tools/pyclients/venv"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "error: $python not found; install Python 3.9+ (or set PYTHON)" >&2
    exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
    echo "creating $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "openai==$OPENAI_VERSION" "eth-account==$ETH_ACCOUNT_VERSION"
"$venv/bin/python" -c "import openai; print('openai', openai.__version__, 'in', '$venv')"
"$venv/bin/python" -c "import eth_account; print('eth-account', '$ETH_ACCOUNT_VERSION', 'in', '$venv')"
