#!/usr/bin/env bash
# Builds the programs that run on the GPU machine into .gpu/ (git-ignored; carried by the device tool): CUDA on,
# sm_90a, Release, stripped. The GPU machine (Ubuntu 24.04) lacks Boost.Program_options and may lack this machine's
# OpenBLAS, SentencePiece, PCRE2 and ICU 72, so those shared libraries travel along as .gpu/syslibs.tar.xz (~14 MB).
# There:  tar xJf .gpu/syslibs.tar.xz -C /tmp/syslibs && export LD_LIBRARY_PATH=/tmp/syslibs:$LD_LIBRARY_PATH
#         LIGER_SOURCE_DIR=$PWD LIGER_BINARY=$PWD/.gpu/liger   (the tests read assets/ and tests/golden/ from the tree)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGER_CUDA=ON -DLIGER_CUDA_ARCHS=90a >/dev/null
targets=(liger test_ops_gpu test_golden_gpu test_recurrence_gpu test_cli)
cmake --build build-gpu -j"${JOBS:-2}" --target "${targets[@]}"
mkdir -p .gpu
# Each binary carries its own copy of the kernels (~12 MB): only what runs there travels (64 MiB limit).
for t in liger tests/ops/test_ops_gpu tests/ops/test_recurrence_gpu tests/model/test_golden_gpu tests/cli/test_cli; do
  cp "build-gpu/$t" .gpu/
  strip .gpu/"$(basename "$t")"
done
if [ ! -f .gpu/syslibs.tar.xz ]; then
  libs=$(mktemp -d)
  for l in libboost_program_options.so.1.74.0 libopenblas.so.0 libgfortran.so.5 libquadmath.so.0 libsentencepiece.so.0 \
           libpcre2-8.so.0 libicuuc.so.72 libicudata.so.72; do
    cp -L "/usr/lib/x86_64-linux-gnu/$l" "$libs/"
  done
  tar cJf .gpu/syslibs.tar.xz -C "$libs" .
  rm -rf "$libs"
fi
du -sh .gpu
