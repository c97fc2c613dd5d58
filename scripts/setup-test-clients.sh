#!/usr/bin/env bash
# Installs the real third-party clients the tests drive, pinned, in a virtual environment at
# tools/pyclients/venv (git-ignored): the official OpenAI Python SDK (proxy tests) and eth-account
# (tools/independent_check.py, the independent check of reports and signatures). The Rust tests find
# it there, or use the interpreter in $CLOISTER_PYTHON; without either they skip, unless
# CLOISTER_REQUIRE_CLIENTS=1.
#
# It also installs Chromium (the explorer test loads the gateway's /explorer in a real headless
# browser) when no chromium is found, with apt-get (as root, or through sudo). The test finds it
# through $CLOISTER_CHROMIUM, else `chromium` or `chromium-browser` in PATH.
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

if [[ -n "${CLOISTER_CHROMIUM:-}" ]] || command -v chromium >/dev/null 2>&1 \
    || command -v chromium-browser >/dev/null 2>&1; then
    :
elif command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (explorer test)"
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq chromium >/dev/null 2>&1 \
        || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq chromium >/dev/null; }
else
    echo "warning: no chromium and no apt-get; the explorer test will skip (set CLOISTER_CHROMIUM)" >&2
fi
if command -v chromium >/dev/null 2>&1; then
    chromium --version 2>/dev/null
fi
