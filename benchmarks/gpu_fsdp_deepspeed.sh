#!/usr/bin/env bash
# Stage 2 for a few steps under the example FSDP and DeepSpeed ZeRO-2 accelerate configs, on one GPU (issue 18):
# a tiny pipeline and 16 toy images are made in a temporary folder, then for each config
#   accelerate launch --config_file examples/configs/<config>.yaml --num_processes 1 \
#       examples/train_stage2_alignment.py ... --max_train_steps 5
# runs with a time limit (LIMIT, default 90 s; the launcher and its workers are killed after it). Each config ends
# with one line "RESULT <config>: ok|failed|timed out|skipped ..." after the last lines of its output; the logs stay
# in $OUT (default: benchmarks/gpu_results). The script itself always exits 0.
# Run from anywhere with diffusers_pixart, diffusers and accelerate importable (PYTHON: the interpreter to use).
# On a machine without GPUs the FSDP run stops at once with the training scripts' one-line error, and DeepSpeed is
# skipped when it is not installed.
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
LIMIT=${LIMIT:-90}
OUT=$(realpath -m "${OUT:-$ROOT/benchmarks/gpu_results}")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false

echo "== data: a tiny pipeline and 16 toy images at 32 px in $WORK"
if ! "$PY" - "$WORK" <<'EOF'
import sys
from pathlib import Path

from diffusers_pixart import tiny
from diffusers_pixart.toy.world import make_dataset

root = Path(sys.argv[1])
tiny.make_pipeline().save_pretrained(root / "base")
make_dataset(root / "toy", n=16, seed=0, resolution=32)
print("base pipeline and data ready")
EOF
then
    echo "RESULT data: failed (no run possible)"
    exit 0
fi

port=29600
for config in fsdp deepspeed_zero2; do
    port=$((port + 1))
    log="$OUT/fsdp_deepspeed_$config.log"
    echo "== $config"
    if [[ $config == deepspeed* ]] && ! "$PY" -c "import deepspeed" >/dev/null 2>&1; then
        echo "RESULT $config: skipped (deepspeed is not installed)"
        continue
    fi
    start=$SECONDS
    timeout -k 10 "$LIMIT" "$PY" -m accelerate.commands.launch --config_file "$ROOT/examples/configs/$config.yaml" \
        --num_processes 1 --main_process_port "$port" "$ROOT/examples/train_stage2_alignment.py" \
        --pretrained_model_name_or_path "$WORK/base" --train_data "$WORK/toy" --output_dir "$WORK/out-$config" \
        --resolution 32 --train_batch_size 2 --max_train_steps 5 --checkpointing_steps 5 --lr_warmup_steps 1 \
        --validation_steps 0 --report_to none </dev/null >"$log" 2>&1
    code=$?
    grep -E -m 5 "^error: |^[A-Za-z.]*(Error|Exception): " "$log" | sed 's/^/first errors: /' | cut -c1-400
    tail -n 12 "$log" | cut -c1-300
    seconds=$((SECONDS - start))
    if [[ $code == 124 || $code == 137 ]]; then
        echo "RESULT $config: timed out after $LIMIT s (exit $code)"
    elif [[ $code != 0 ]]; then
        echo "RESULT $config: failed (exit $code, $seconds s); log $log"
    elif [[ -f $WORK/out-$config/pipeline/model_index.json ]]; then
        checkpoint=missing
        [[ -d $WORK/out-$config/checkpoints/checkpoint-5 ]] && checkpoint=saved
        echo "RESULT $config: ok (exit 0, $seconds s, 5 steps, pipeline saved, checkpoint-5 $checkpoint)"
    else
        echo "RESULT $config: failed (exit 0 but no pipeline saved, $seconds s); log $log"
    fi
done
exit 0
