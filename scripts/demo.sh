#!/usr/bin/env bash
# The main job on the bundled model, start to finish on the CPU (a few minutes): installs what is missing, builds,
# then with stories260K: generate with the base model -> convert to Liger-GLA -> perplexity before training ->
# LoRA fine-tuning (configs/stories260k-liger-gla.cfg) -> perplexity after, with per-layer diagnostics -> generate
# through the exact recurrent decode with the trained adapter -> export the merged model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install_deps.sh
scripts/build.sh
BASE=assets/stories260K/hf
RUN=runs/stories260k-liger-gla
TEXT=(--data assets/text/tinystories_valid_head.txt --data-format text --chunk-length 256 --validation-fraction 0.1)
# The same held-out text as one continuous stream of 512-token chunks, with the loss by position: beyond the 64-token
# window only the recurrent branch carries the context (docs/RESULTS.md, issue 12).
STREAM=(--data assets/text/tinystories_valid_head.txt --data-format text --chunk-length 512 --validation-fraction 0.1
        --pack-across-documents true --by-position)
rm -rf "$RUN"

echo "== 1. the base model (softmax attention), greedy =="
build/liger generate --model "$BASE" --prompt "Once upon a time, a little dog" --max-new-tokens 80
echo "== 2. convert to Liger-GLA (0.5 gated linear attention + 0.5 sliding window of 64) =="
build/liger convert --model "$BASE" --out "$RUN/model" --variant gla
echo "== 3. held-out loss: base model, then the untrained conversion =="
build/liger eval --model "$BASE" "${TEXT[@]}"
build/liger eval --model "$RUN/model" "${TEXT[@]}"
echo "== 3b. loss by position on continuous text (512-token chunks): base, then the untrained conversion =="
build/liger eval --model "$BASE" "${STREAM[@]}"
build/liger eval --model "$RUN/model" "${STREAM[@]}"
echo "== 4. LoRA fine-tuning (r=8 on q,k,v; AdamW lr 1e-3) =="
build/liger train --config configs/stories260k-liger-gla.cfg
CKPT=$(ls -d "$RUN"/step_* | sort | tail -n 1)
echo "== 5. held-out loss after fine-tuning, with per-layer conversion diagnostics =="
build/liger eval --model "$RUN/model" --adapter "$CKPT" "${TEXT[@]}" --diagnostics
echo "== 5b. loss by position on continuous text after fine-tuning =="
build/liger eval --model "$RUN/model" --adapter "$CKPT" "${STREAM[@]}"
echo "== 6. generate through the recurrent decode (state + 64-token window ring buffer), trained adapter =="
build/liger generate --model "$RUN/model" --adapter "$CKPT" --prompt "Once upon a time, a little dog" \
  --max-new-tokens 80
echo "== 7. export the merged model and sample from it =="
build/liger export --model "$RUN/model" --adapter "$CKPT" --out "$RUN/merged"
build/liger generate --model "$RUN/merged" --prompt "Lily wanted to" --max-new-tokens 60 --temperature 0.8 \
  --top-p 0.9 --seed 7
