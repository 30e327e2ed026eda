#!/usr/bin/env bash
# The GPU check of the performance issue, one prepared script (about 5 minutes on one H100):
#   1. inference, ours vs diffusers' pipeline, XL/2 at 1024 px (and 512 px with --full), 20 steps, CFG, bf16;
#   2. the same at 1024 px with ours fused (QKV/KV), padding dropped and its blocks compiled (regional compilation,
#      fullgraph; the caption cache keeps working), with the kernel-time profile (--kernels);
#   3. one XL/2 256px training step (fp32), ours vs diffusers', in both orders;
#   4. with --full, the scaling sweep (forward time against tokens, 256..2048 px).
# Results go to $OUT (default: benchmarks/gpu_results): *.log, gpu.jsonl, scaling_gpu.{json,png}.
# Run from the repository root with diffusers_pixart importable (installed, or PYTHONPATH=src).
set -u
OUT=$(realpath -m "${OUT:-benchmarks/gpu_results}")
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.log"
python3 -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)" | tee -a "$OUT/gpu.log"
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, go on after a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" 2>&1 | grep -v "clean_caption\|beautifulsoup\|restart your runtime\|^$" | tee "$OUT/$name.log"
}
configs=(xl1024)
[[ ${1:-} == --full ]] && configs=(xl512 xl1024)
step inference_plain 120 python3 bench_inference.py --configs "${configs[@]}" --steps 20 --repeats 3 --json "$OUT/gpu.jsonl"
step inference_fast 180 python3 bench_inference.py --configs xl1024 --steps 20 --repeats 3 --fuse --drop-padding \
    --compile default --compile-scope blocks --kernels --json "$OUT/gpu.jsonl"
step training 60 python3 bench_training.py --configs xl256 --steps 5
step training_swapped 60 python3 bench_training.py --configs xl256 --steps 5 --diffusers-first
if [[ ${1:-} == --full ]]; then
    step scaling 100 python3 bench_scaling.py --resolutions 256 512 1024 2048 --max-timed 2048 --repeats 3 \
        --out-dir "$OUT" --name scaling_gpu
fi
