#!/usr/bin/env bash
# Installs what building and testing Cloister needs on a fresh Debian machine: the C/C++ toolchain
# that llama.cpp's build uses (cmake, clang, libclang for bindgen, ccache), Node/npm for the pinned chain
# tools (anvil, forge, cast, solcjs, OpenZeppelin in contracts/), then the demo model.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v clang >/dev/null 2>&1 || need+=(clang)
command -v ccache >/dev/null 2>&1 || need+=(ccache)
ls /usr/lib/llvm-*/lib/libclang.so* >/dev/null 2>&1 || ls /usr/lib/x86_64-linux-gnu/libclang*.so* >/dev/null 2>&1 || need+=(libclang-dev)
command -v python3 >/dev/null 2>&1 || need+=(python3 python3-pip)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
command -v npm >/dev/null 2>&1 || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]} (apt)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust with rustup first" >&2; exit 1; }
if [ ! -x contracts/node_modules/.bin/anvil ]; then
  echo "setup: npm ci --prefix contracts (anvil, forge, cast, solc, OpenZeppelin; pinned)"
  npm ci --prefix contracts --no-audit --no-fund --loglevel=error
fi
scripts/fetch-model.sh
scripts/fetch-embedding-model.sh
