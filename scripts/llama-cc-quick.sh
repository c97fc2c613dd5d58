#!/usr/bin/env bash
# Compiler launcher for the test build of llama-server (scripts/build-llama-cpp.sh with QUICK=1):
# ggml (the kernels) compiles as configured (-O3); libllama, the server, its common library and mtmd
# (model graphs, tokenizer, sampling, HTTP, JSON, chat templates: most of the compile time, little of
# the run time for the tests' short answers from a 135M model) compile at -O0. The tests need a real
# server, not a fast one.
src=""
for arg in "$@"; do case "$arg" in *.c | *.cc | *.cpp | *.cxx) src=$arg ;; esac; done
case "$src" in
  */ggml/*) exec "$@" ;;
esac
args=()
for arg in "$@"; do case "$arg" in -O1 | -O2 | -O3) args+=(-O0) ;; *) args+=("$arg") ;; esac; done
exec "${args[@]}"
