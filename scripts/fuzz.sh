#!/usr/bin/env bash
# Builds the parser fuzz loop under AddressSanitizer + UBSan in build-asan/ (CPU only) and runs it.
#   scripts/fuzz.sh [--seed S] [--iterations N]        (default: --seed 1 --iterations 20000)
# Build parallelism: LIGER_BUILD_JOBS (default: all cores). Exit status: 0 clean, non-zero on a finding.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build-asan -G Ninja -DLIGER_CUDA=OFF -DLIGER_SANITIZE=address,undefined \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-asan --target fuzz_parsers -j"${LIGER_BUILD_JOBS:-$(nproc)}"
args=("$@")
if [ ${#args[@]} -eq 0 ]; then args=(--seed 1 --iterations 20000); fi
# halt_on_error: the first UB report fails the run (UBSan only prints and continues by default).
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
exec build-asan/tests/fuzz/fuzz_parsers "${args[@]}"
