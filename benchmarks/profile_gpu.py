"""Where ours and diffusers' PixArt-XL/2 spend GPU time: torch.profiler tables of one guided 1024px bf16 forward
(batch 2, 120 caption tokens, the last 40 padding) and one 256px fp32 training step, per model, and the
cross-attention's
SDPA call timed with the caption bias as ours passes it (broadcast over heads) and as diffusers does (one row per
head), and without a bias. A diagnostic for the GPU check (``gpu_check.sh``); prints tables only.

Run: ``python benchmarks/profile_gpu.py`` (CUDA; on CPU it runs the same at 256px as a smoke test).
"""

from __future__ import annotations

import time

import diffusers
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

from diffusers_pixart import PixArtTransformer2DModel


def inputs(resolution: int, batch: int, device: torch.device, dtype: torch.dtype) -> dict:
    side = resolution // 8
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, 120)
    mask[:, 80:] = 0
    return dict(
        hidden_states=torch.randn(batch, 4, side, side, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(batch, 120, 4096, generator=g).to(device, dtype),
        timestep=torch.tensor([500] * batch, device=device),
        encoder_attention_mask=mask.to(device),
    )


def twin(sample_size: int, device: torch.device, dtype: torch.dtype):
    torch.manual_seed(0)
    ours = PixArtTransformer2DModel(sample_size=sample_size, caption_channels=4096, use_additional_conditions=False)
    theirs = diffusers.PixArtTransformer2DModel.from_config(ours.config)
    theirs.load_state_dict(ours.state_dict())
    return ours.to(device, dtype), theirs.to(device, dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def report(name: str, fn, device: torch.device, rows: int = 12) -> None:
    for _ in range(3):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(5):
        fn()
    sync(device)
    wall = (time.perf_counter() - start) / 5
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = prof.key_averages()
    total = sum(getattr(e, "self_device_time_total", 0) for e in events) / 1e3
    print(f"\n=== {name}: wall {wall * 1e3:.1f} ms per call; GPU kernel time {total:.1f} ms")
    print(events.table(sort_by=key, row_limit=rows, max_name_column_width=70))


def main() -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    big = 1024 if device.type == "cuda" else 256
    print(torch.__version__, diffusers.__version__, torch.cuda.get_device_name() if device.type == "cuda" else "cpu")
    bf16 = torch.bfloat16 if device.type == "cuda" else torch.float32
    ours, theirs = twin(big // 8, device, bf16)
    kwargs = inputs(big, 2, device, bf16)
    with torch.no_grad():
        for name, model in (("ours", ours), ("diffusers", theirs)):
            report(f"{name} forward {big}px {bf16}", lambda m=model: m(**kwargs), device)
    del ours, theirs
    ours, theirs = twin(32, device, torch.float32)
    kwargs = inputs(256, 2, device, torch.float32)
    for name, model in (("ours", ours), ("diffusers", theirs)):
        model.train()
        report(f"{name} fwd+bwd 256px fp32", lambda m=model: m(**kwargs).sample.sum().backward(), device)
    del ours, theirs
    n = (big // 16) ** 2
    q = torch.randn(2, 16, n, 72, device=device, dtype=bf16)
    k = torch.randn(2, 16, 120, 72, device=device, dtype=bf16)
    v = torch.randn(2, 16, 120, 72, device=device, dtype=bf16)
    bias = torch.zeros(2, 1, 1, 120, device=device, dtype=bf16)
    bias[..., 80:] = -10000.0
    variants = {
        "bias (B,1,1,L) broadcast (ours)": bias,
        "bias (B,h,1,L) contiguous (diffusers)": bias.expand(2, 16, 1, 120).contiguous(),
        "no bias, padding dropped": None,
    }
    for name, mask in variants.items():
        keys, values = (k[..., :80, :], v[..., :80, :]) if mask is None else (k, v)
        report(
            f"SDPA {name}",
            lambda m=mask, a=keys, b=values: F.scaled_dot_product_attention(q, a, b, attn_mask=m),
            device,
            rows=4,
        )


if __name__ == "__main__":
    main()
