#!/usr/bin/env bash
# Builds the programs that run on the GPU machine into .gpu/ (git-ignored; carried by the device tool): CUDA on,
# sm_90a, Release, stripped. The GPU machine (Ubuntu 24.04) lacks Boost.Program_options and may lack this machine's
# OpenBLAS, SentencePiece, PCRE2 and ICU 72, so those shared libraries travel along as .gpu/syslibs.tar.xz (~14 MB).
# There:  tar xJf .gpu/syslibs.tar.xz -C /tmp/syslibs && export LD_LIBRARY_PATH=$PWD/.gpu/lib:/tmp/syslibs:$LD_LIBRARY_PATH
#         LIGER_SOURCE_DIR=$PWD LIGER_BINARY=$PWD/.gpu/liger   (the tests read assets/ and tests/golden/ from the tree)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/cuda/bin:$PATH
# Shared libraries: the kernels live once in libliger_ops.so instead of in every test binary (the tree travels within
# 64 MiB). There:  export LD_LIBRARY_PATH=$PWD/.gpu/lib:/tmp/syslibs:$LD_LIBRARY_PATH
cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DLIGER_CUDA=ON -DLIGER_CUDA_ARCHS=90a \
  -DBUILD_SHARED_LIBS=ON -DCMAKE_EXPORT_COMPILE_COMMANDS=ON >/dev/null
tests=(tests/ops/test_ops_gpu tests/ops/test_recurrence_gpu tests/ops/test_backward_gpu tests/ops/test_train_ops_gpu
       tests/model/test_golden_gpu tests/train/test_train_gpu tests/cli/test_cli)
targets=(liger)
for t in "${tests[@]}"; do targets+=("$(basename "$t")"); done
cmake --build build-gpu -j"${JOBS:-2}" --target "${targets[@]}"
rm -rf .gpu/lib && mkdir -p .gpu/lib
for t in liger "${tests[@]}"; do
  cp "build-gpu/$t" .gpu/
  strip .gpu/"$(basename "$t")"
done
find build-gpu -name 'libliger_*.so' -exec cp {} .gpu/lib/ \;
strip .gpu/lib/*.so
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
