#!/usr/bin/env bash
# The linearization experiment of issue 4 (docs/RESULTS.md): on the bundled stories260K with TinyStories text, the
# held-out loss of the base model, of each Liger conversion before training, and after LoRA fine-tuning.
# Usage: tools/experiments/linearization.sh [RUN_DIR]   (CPU; about 2 minutes per variant on one core)
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/linearization}
LIGER=${LIGER:-build/liger}
BASE=assets/stories260K/hf
DATA=(--data assets/text/tinystories_valid_head.txt --data-format text --chunk-length 256 --validation-fraction 0.1)
mkdir -p "$RUN"
summary="$RUN/summary.tsv"
printf 'model\tloss_before\tloss_after\tsteps\n' > "$summary"

eval_loss() {  # model dir, [adapter dir] -> the held-out loss (the validation split `liger train` holds out)
  local extra=()
  [ $# -gt 1 ] && extra=(--adapter "$2")
  "$LIGER" eval --model "$1" "${extra[@]}" "${DATA[@]}" | sed -n 's/^loss \([0-9.]*\).*/\1/p'
}

train_run() {  # model dir, run dir -> trains one epoch with the recipe, prints the last checkpoint
  "$LIGER" train --model "$1" --out "$2" "${DATA[@]}" --grad-accum 4 --epochs 1 --log-every 50 --eval-chunks 0 \
    > "$2.train.log" 2>&1
  ls -d "$2"/step_* | sort | tail -n 1
}

base=$(eval_loss "$BASE")
# The base model with the same LoRA fine-tuning: the adapters also learn this text's formatting (a BOS and EOS per
# paragraph), so this is the fair floor for the fine-tuned conversions.
rm -rf "$RUN/base-lora"
ckpt=$(train_run "$BASE" "$RUN/base-lora")
base_lora=$(eval_loss "$BASE" "$ckpt")
printf 'base (softmax attention) + LoRA\t%s\t%s\t%d\n' "$base" "$base_lora" "$((10#${ckpt##*step_}))" >> "$summary"
for spec in "gla:--variant gla" "hgrn2:--variant hgrn2" "gsa:--variant gsa --gsa-slots 4" \
            "gla-no-swa:--variant gla --ablation no-swa" "gla-swa-only:--variant gla --ablation swa-only"; do
  name=${spec%%:*}
  args=${spec#*:}
  rm -rf "$RUN/$name"
  # shellcheck disable=SC2086
  "$LIGER" convert --model "$BASE" --out "$RUN/$name/model" $args >/dev/null 2>&1
  before=$(eval_loss "$RUN/$name/model")
  ckpt=$(train_run "$RUN/$name/model" "$RUN/$name/run")
  after=$(eval_loss "$RUN/$name/model" "$ckpt")
  steps=${ckpt##*step_}
  printf 'liger %s\t%s\t%s\t%d\n' "$name" "$before" "$after" "$((10#$steps))" >> "$summary"
  echo "$name: before $before after $after (base $base, base + LoRA $base_lora)"
done
column -t -s $'\t' "$summary"
