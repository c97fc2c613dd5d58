#!/usr/bin/env bash
# Full check of the contracts project, from a fresh clone too:
#   1. installs the pinned toolchain (npm ci) if node_modules is missing;
#   2. rebuilds out/ from scratch (build.sh) and fails if that changed anything: against the files
#      as they were before the rebuild, and against git (modified or untracked files in out/);
#   3. runs the whole test suite (unit, fuzz, invariant, gas); forge's own output goes to cache/;
#   4. checks every unit and gas test's gas against the committed .gas-snapshot, exactly (EVM gas is
#      deterministic with the pinned forge and solc), so a gas regression fails. Fuzz and invariant
#      tests are left out: their gas depends on the inputs drawn, and those on the bytecode.
#      After a deliberate change: `bash check.sh --update-gas` rewrites .gas-snapshot (commit it).
set -euo pipefail
cd "$(dirname "$0")"
start=$(date +%s)
update_gas=false
[ "${1:-}" = "--update-gas" ] && update_gas=true
# Tests whose gas is not a figure: their inputs are drawn at random (with a fixed seed).
no_gas_snapshot='testFuzz_|invariant_'

if [ ! -x node_modules/.bin/forge ]; then
  npm ci --no-audit --no-fund
fi
export PATH="$PWD/node_modules/.bin:$PATH"
forge --version | head -1
bin/solc --version | tail -1

rm -rf cache/out-before
mkdir -p cache
if [ -d out ]; then cp -r out cache/out-before; else mkdir cache/out-before; fi
bash build.sh
if ! diff -r cache/out-before out; then
  echo "check.sh: rebuilding changed contracts/out (diff above): run contracts/build.sh and commit out/" >&2
  exit 1
fi
if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  if [ -n "$(git ls-files -- out)" ]; then
    git diff --exit-code -- out
    untracked=$(git ls-files --others --exclude-standard -- out)
    if [ -n "$untracked" ]; then
      echo "check.sh: untracked files in contracts/out:" >&2
      echo "$untracked" >&2
      exit 1
    fi
  else
    echo "check.sh: WARNING: contracts/out is not committed yet; checked only that rebuilding reproduces it" >&2
  fi
fi
echo "check.sh: out/ is reproducible"

forge test
if $update_gas; then
  forge snapshot --no-match-test "$no_gas_snapshot" --snap .gas-snapshot >cache/gas-snapshot.log
  echo "check.sh: wrote .gas-snapshot"
elif ! forge snapshot --no-match-test "$no_gas_snapshot" --check .gas-snapshot >cache/gas-snapshot.log 2>&1; then
  grep -E '^(Diff in|No matching snapshot)' cache/gas-snapshot.log >&2 || tail -20 cache/gas-snapshot.log >&2
  echo "check.sh: gas differs from contracts/.gas-snapshot (above). If the change is meant:" \
    "bash contracts/check.sh --update-gas, and commit .gas-snapshot" >&2
  exit 1
fi
echo "check.sh: gas matches .gas-snapshot"
echo "check.sh: ok in $(( $(date +%s) - start ))s"
