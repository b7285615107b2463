#!/usr/bin/env bash
# Installs what is missing, builds (with CUDA whenever nvcc is present, so the GPU code is compiled and linked too),
# runs every test with ctest — GPU tests run where a GPU is present and skip with a message elsewhere — and then the
# parser fuzz loop under AddressSanitizer + UBSan.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
status=0
ctest --test-dir build --output-on-failure -j"$(nproc)" || status=$?
# Skipped tests are counted with their reasons, so a skip is never silent.
log=build/Testing/Temporary/LastTest.log
if grep -q ": Skipped$" "$log" 2>/dev/null; then
  echo "---- skipped tests: count and reason ----"
  grep -A1 ": Skipped$" "$log" | grep -v -e "^--$" -e ": Skipped$" | sort | uniq -c
fi
scripts/fuzz.sh || status=$?
exit $status
