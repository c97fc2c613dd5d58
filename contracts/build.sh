#!/usr/bin/env bash
# Rebuilds contracts/out/ (the committed artifacts) from scratch: a forced forge build of src/ into
# cache/release-out, then only our contracts' lean artifacts are exported to out/.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -x node_modules/.bin/forge ]; then
  npm ci --no-audit --no-fund
fi
export PATH="$PWD/node_modules/.bin:$PATH"
rm -rf cache/release-out cache/release-cache
FOUNDRY_OUT=cache/release-out FOUNDRY_CACHE_PATH=cache/release-cache \
  forge build --skip 'test/**' --skip 'script/**' --force
node scripts/export-artifacts.js cache/release-out out
