"""How the cost of PixArt-XL/2 grows with resolution: counted FLOPs and measured forward time, ours vs diffusers'.

For each resolution, one transformer forward (batch 1, 120 caption tokens, random weights): the FLOPs counted on the
meta device (no memory, any size), split into the attention products (``4 N (N + L) D`` per block, quadratic in the
tokens ``N``; computed, since on the meta device SDPA is counted through its matmuls) and the rest (linear in
``N``); and, up to ``--max-timed`` px, the median wall time of ours and diffusers'
model. Writes ``scaling.json`` and the plot ``scaling.png`` (time and GFLOP against image tokens) next to this file,
or as ``--name``.json/.png in ``--out-dir``.

Run: ``python benchmarks/bench_scaling.py --resolutions 256 512 1024 2048 --max-timed 512 --threads 1``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import diffusers
import matplotlib
import torch
from common import load_average, machine, median_time, pick_device
from torch.utils.flop_counter import FlopCounterMode

from diffusers_pixart import PixArtTransformer2DModel

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).parent


def forward_inputs(resolution: int, device: torch.device | str) -> dict:
    """Inputs of one forward at ``resolution`` px: latent (1, 4, r/8, r/8), caption (1, 120, 4096)."""
    side = resolution // 8
    return dict(
        hidden_states=torch.randn(1, 4, side, side, device=device),
        encoder_hidden_states=torch.randn(1, 120, 4096, device=device),
        timestep=torch.tensor([500], device=device),
        added_cond_kwargs={
            "resolution": torch.tensor([[resolution, resolution]], device=device, dtype=torch.float32),
            "aspect_ratio": torch.ones(1, 1, device=device),
        },
    )


def counted_flops(resolution: int, caption_tokens: int = 120) -> tuple[int, int]:
    """``(attention-product FLOPs, other FLOPs)`` of one XL/2 forward; the total is counted on the meta device."""
    with torch.device("meta"):
        model = PixArtTransformer2DModel(sample_size=resolution // 8, caption_channels=4096)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(**forward_inputs(resolution, "meta"))
    tokens, config = (resolution // 16) ** 2, model.config
    width = config.num_attention_heads * config.attention_head_dim
    attention = config.num_layers * 4 * tokens * (tokens + caption_tokens) * width  # QK^T and AV, self + cross
    return attention, counter.get_total_flops() - attention


def timed(resolution: int, device: torch.device, repeats: int) -> dict:
    """Median forward seconds of ours and diffusers' model (same weights) at ``resolution`` px."""
    torch.manual_seed(0)
    ours = PixArtTransformer2DModel(sample_size=resolution // 8, caption_channels=4096).eval().to(device)
    kwargs = forward_inputs(resolution, device)
    result = {}
    with torch.no_grad():
        result["ours"], _ = median_time(lambda: ours(**kwargs), device, repeats)
        theirs = diffusers.PixArtTransformer2DModel.from_config(ours.config).eval().to(device)
        theirs.load_state_dict(ours.state_dict(), strict=True)
        ours.to("meta")  # free its weights before timing the other model
        result["diffusers"], _ = median_time(lambda: theirs(**kwargs), device, repeats)
    return result


def plot(rows: list[dict], title: str, path: Path) -> None:
    """Time and GFLOP against tokens, log-log, into the PNG file ``path``."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    tokens = [r["tokens"] for r in rows]
    for label, marker in (("ours", "o"), ("diffusers", "x")):
        points = [(r["tokens"], r[label]) for r in rows if label in r]
        if points:
            left.plot(*zip(*points), marker=marker, label=f"{label} (measured)")
    left.set(xscale="log", yscale="log", xlabel="image tokens (batch 1)", ylabel="seconds per forward")
    left.set_title("XL/2 forward time", fontsize=10)
    left.legend()
    right.plot(tokens, [r["attention_gflop"] for r in rows], marker="o", label="attention (quadratic)")
    right.plot(tokens, [r["other_gflop"] for r in rows], marker="s", label="projections, FFN, rest (linear)")
    right.plot(tokens, [r["attention_gflop"] + r["other_gflop"] for r in rows], marker="^", label="total")
    right.set(xscale="log", yscale="log", xlabel="image tokens (batch 1)", ylabel="GFLOP per forward (counted)")
    right.set_title("XL/2 FLOPs", fontsize=10)
    right.legend()
    for axis in (left, right):
        for row in rows:
            axis.annotate(f"{row['resolution']}px", (row["tokens"], axis.get_ylim()[0]), fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    """Count, time, write JSON and the plot."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resolutions", nargs="+", type=int, default=[256, 512, 1024, 2048])
    parser.add_argument("--max-timed", type=int, default=512, help="Largest resolution to time (px).")
    parser.add_argument("--repeats", type=int, default=2, help="Timed forwards per model (after one warm-up).")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="Folder of the JSON and PNG (default: here).")
    parser.add_argument("--name", default="scaling", help="Base name of the JSON and PNG files.")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    title = f"{machine(device)}; {load_average()} at start"
    print(title)
    rows = []
    for resolution in args.resolutions:
        attention, other = counted_flops(resolution)
        row = dict(resolution=resolution, tokens=(resolution // 16) ** 2, attention_gflop=attention / 1e9)
        row["other_gflop"] = other / 1e9
        if resolution <= args.max_timed:
            row.update(timed(resolution, device, args.repeats))
        row["load"] = load_average()
        rows.append(row)
        print(json.dumps(row))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps({"machine": title, "rows": rows}, indent=1) + "\n")
    plot(rows, title, args.out_dir / f"{args.name}.png")


if __name__ == "__main__":
    main()
