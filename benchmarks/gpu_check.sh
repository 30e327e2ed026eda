#!/usr/bin/env bash
# The prepared GPU check (issue 25; at most BUDGET = 8 minutes on one H100/H200), most important first, each step with
# its own time limit (cut to what is left of the budget), going on after a failure:
#   1. inference, ours vs diffusers' pipeline, XL/2 at 1024 px (and 512 px with --full), 20 steps, CFG, bf16;
#   2. an XL/2 256px training step in bf16 autocast at batch 32, ours vs diffusers' in the same loop (MFU, ratio);
#   3. peak GPU memory of one 1024 px generation with the real-size models, default bf16 vs all low-memory options
#      (bench_memory.py);
#   4. stage 2 for 5 steps under examples/configs/fsdp.yaml and deepspeed_zero2.yaml (gpu_fsdp_deepspeed.sh);
#   5. LCM: 4 steps without guidance at 1024 px (a few-step model's latency; random weights), then an XL/2 LoRA
#      training step's and a full fine-tuning step's peak memory at 1024 px, batch 1, bf16, with and without
#      checkpointing and 8-bit AdamW (bench_lora_memory.py; issue 21's aims: LoRA under 12 GB, full under 24 GB);
#   6. ours fused (QKV/KV), padding dropped, blocks compiled (regional compilation, the caption cache kept) and float8
#      linear layers in the blocks (torchao; cards with float8 tensor cores);
#   7. as 6 without float8, with the kernel-time profile (--kernels);
#   8. as 7 with CUDA graphs (reduce-overhead) around the blocks and a compiled channels-last VAE decoder;
#   9. the float32 training step at batch 2 (the earlier runs' row);
#  10. with --full, the scaling sweep (forward time against tokens, 256..2048 px).
# Results go to $OUT (default: benchmarks/gpu_results), written as they come, so that a run stopped early keeps what
# it measured: gpu_check.log (every step's output), gpu.jsonl, memory_gpu.jsonl, the two fsdp_deepspeed_*.log,
# lora_memory_gpu.json and scaling_gpu.{json,png} with --full (at most 8 files: the device tool's limit).
# Run from the repository root with diffusers_pixart importable (installed, or PYTHONPATH=src).
# On a lent machine, point OUT at the folder that comes back and set BUDGET from what the lease has left (on
# 2026-11-29 another run had spent most of the session's device time first, and the check was stopped after 241 s).
set -u
OUT=$(realpath -m "${OUT:-benchmarks/gpu_results}")
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OUT
cd "$(dirname "$0")"
LOG=$OUT/gpu_check.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$LOG"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$LOG"
BUDGET=${BUDGET:-480}  # seconds for all steps: each step's limit is cut to what is left, most important steps first
step() {  # step NAME SECONDS COMMAND...: run with a time limit, append to $LOG, go on after a failure
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    ((limit > BUDGET - SECONDS)) && limit=$((BUDGET - SECONDS))
    if ((limit < 20)); then
        echo "== $name: skipped (the time budget of $BUDGET s is spent)" | tee -a "$LOG"
        return
    fi
    echo "== $name (limit $limit s): $*" | tee -a "$LOG"
    timeout -k 5 "$limit" "$@" 2>&1 | grep --line-buffered -v "clean_caption\|beautifulsoup\|restart your runtime\|^$" |
        tee -a "$LOG"
    echo "== $name: exit ${PIPESTATUS[0]} after $((SECONDS - start)) s" | tee -a "$LOG"
}
configs=(xl1024)
[[ ${1:-} == --full ]] && configs=(xl512 xl1024)
fast=(--configs xl1024 --steps 20 --repeats 3 --fuse --drop-padding --compile default --compile-scope blocks)
fast+=(--json "$OUT/gpu.jsonl")
step inference_plain 90 python3 bench_inference.py --configs "${configs[@]}" --steps 20 --repeats 3 --json "$OUT/gpu.jsonl"
step training_bf16 50 python3 bench_training.py --configs xl256 --steps 5 --batch-size 32 --mixed-precision bf16
step memory 100 python3 bench_memory.py --device cuda --steps 2 --configs default all --json "$OUT/memory_gpu.jsonl"
step fsdp_deepspeed 130 env LIMIT=60 bash gpu_fsdp_deepspeed.sh
step inference_lcm 60 python3 bench_inference.py --configs xl1024 --sampler lcm --repeats 3 --json "$OUT/gpu.jsonl"
step lora_memory 120 python3 bench_lora_memory.py --device cuda --trained lora full --resolutions 1024 \
    --base_dtypes bf16 --checkpointing off on --optimizers adamw adamw8bit --out "$OUT/lora_memory_gpu.json"
step inference_fp8 200 python3 bench_inference.py "${fast[@]}" --fp8  # did not finish in 110 s on an H200 (2026-11-29)
step inference_fast 100 python3 bench_inference.py "${fast[@]}" --kernels
step inference_graphs 100 python3 bench_inference.py "${fast[@]/default/reduce-overhead}" --compile-vae
step training 40 python3 bench_training.py --configs xl256 --steps 5
if [[ ${1:-} == --full ]]; then
    step scaling 100 python3 bench_scaling.py --resolutions 256 512 1024 2048 --max-timed 2048 --repeats 3 \
        --out-dir "$OUT" --name scaling_gpu
fi
