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
# Skipped tests are listed, with their reason, so a skip is never silent.
if grep -h "SKIPPED \]" build/Testing/Temporary/LastTest.log >/dev/null 2>&1; then
  echo "---- skipped tests (reason printed by each test) ----"
  grep -h -B1 "SKIPPED \]" build/Testing/Temporary/LastTest.log | grep -v "^--$" | grep -v "SKIPPED \] [0-9]* test" | sort -u
fi
scripts/fuzz.sh || status=$?
exit $status
