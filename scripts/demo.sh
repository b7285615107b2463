#!/usr/bin/env bash
# The main job on the bundled model: installs what is missing, builds, and generates text with stories260K (CPU),
# then with the GPU when one is present.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
MODEL=assets/stories260K/hf
echo "== liger generate (greedy, CPU) =="
build/liger generate --model "$MODEL" --prompt "Once upon a time, a little dog" --max-new-tokens 120
echo "== liger generate (temperature 0.8, top-p 0.9, seed 7, CPU) =="
build/liger generate --model "$MODEL" --prompt "Lily wanted to" --max-new-tokens 120 --temperature 0.8 --top-p 0.9 --seed 7
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "== liger generate (greedy, GPU bf16) =="
  build/liger generate --model "$MODEL" --prompt "Once upon a time, a little dog" --max-new-tokens 120 --device cuda
fi
