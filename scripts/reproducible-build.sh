#!/usr/bin/env bash
# Checks that the release `cloister` binary is reproducible: builds it twice, from two copies of the
# committed tree (`git archive HEAD`) in two directories of different names and lengths, each with
# its own target directory, then compares the two binaries' SHA-256. Exit 0 when they are identical.
#
# What makes the build independent of where it runs (deploy/Dockerfile does the same):
# - `--remap-path-prefix` (Rust) and `-ffile-prefix-map` (C/C++ of llama.cpp, through CFLAGS and
#   CXXFLAGS) replace the source, target and cargo-home directories by fixed names;
# - SOURCE_DATE_EPOCH is the commit's time; `--locked` builds exactly Cargo.lock;
# - no incremental compilation, and the binary embeds no build time or host name.
#
# Usage: scripts/reproducible-build.sh            (REPRO_WORK=DIR keeps the builds there;
#        REPRO_KEEP_TARGETS=1 reuses the target directories of an earlier run in REPRO_WORK, so a
#        re-check after a small change rebuilds only what changed)
# Takes two cold release builds: about 20-50 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cmake >/dev/null && command -v clang >/dev/null || scripts/setup.sh

commit=$(git rev-parse HEAD)
work=${REPRO_WORK:-$(mktemp -d /tmp/cloister-repro.XXXXXX)}
mkdir -p "$work"
cargo_home=${CARGO_HOME:-$HOME/.cargo}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export CARGO_INCREMENTAL=0
# The workspace's .cargo/config.toml sets `target-cpu=x86-64-v3` and curve25519-dalek's AVX-512
# backend cfg; RUSTFLAGS replaces the config's rustflags, so both are repeated here.
target_cpu=$(sed -n 's/.*"target-cpu=\([^"]*\)".*/\1/p' .cargo/config.toml)
config_flags="-C target-cpu=${target_cpu:-x86-64-v3}"
if grep -q 'curve25519_dalek_backend=\\"avx512\\"' .cargo/config.toml; then
  config_flags="$config_flags --cfg curve25519_dalek_backend=\"avx512\""
fi

build() { # $1: source dir, $2: target dir
  local src=$1 target=$2 start
  rm -rf "$src"
  [ "${REPRO_KEEP_TARGETS:-0}" = 1 ] || rm -rf "$target"
  mkdir -p "$src"
  git archive "$commit" | tar -x -C "$src"
  local maps="-ffile-prefix-map=$src=/build -ffile-prefix-map=$target=/target -ffile-prefix-map=$cargo_home=/cargo"
  start=$(date +%s)
  echo "building $commit in $src (target $target)" >&2
  (
    cd "$src"
    CARGO_TARGET_DIR="$target" \
      RUSTFLAGS="$config_flags --remap-path-prefix=$src=/build --remap-path-prefix=$target=/target --remap-path-prefix=$cargo_home=/cargo" \
      CFLAGS="$maps" CXXFLAGS="$maps" \
      cargo build --release --locked -p cloister-cli --bin cloister --quiet
  )
  echo "built in $(($(date +%s) - start)) s" >&2
}

build "$work/a" "$work/target-a"
build "$work/second-build-directory" "$work/t-b"
a=$(sha256sum "$work/target-a/release/cloister" | cut -d' ' -f1)
b=$(sha256sum "$work/t-b/release/cloister" | cut -d' ' -f1)
size=$(stat -c %s "$work/target-a/release/cloister")
echo "commit:   $commit"
echo "SOURCE_DATE_EPOCH: $SOURCE_DATE_EPOCH"
echo "build 1:  $a  ($work/a)"
echo "build 2:  $b  ($work/second-build-directory)"
echo "size:     $size bytes"
if [ "$a" = "$b" ]; then
  echo "REPRODUCIBLE: identical sha256"
else
  echo "NOT REPRODUCIBLE: the binaries differ" >&2
  cmp -l "$work/target-a/release/cloister" "$work/t-b/release/cloister" | head -5 >&2 || true
  exit 1
fi
