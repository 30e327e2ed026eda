"""KV token compression (PixArt-Σ): FLOPs and CPU time of an XL/2 forward at 2048 px, with and without it.

The model is PixArt-XL/2 (width 1152, 16 heads, 28 blocks, random weights) at sample size 256 (2048 px through an
8x VAE: a 256 x 256 latent, 128 x 128 = 16384 image tokens) with a 300-token caption, batch 1, float32. "Σ KV" is
the Σ code's 2K/4K setting: keys and values compressed 2 x 2 (depthwise strided convolution and LayerNorm) in the deep
half of the blocks, 14-27.

- FLOPs are counted (``torch.utils.flop_counter``) for the whole 28-block forward of each model, on the meta device
  (shapes only: nothing is computed).
- Time: a 28-block forward at 16384 tokens is about a minute per model on 2 CPU cores, so one plain block and one
  compressed block (the same weights) are timed on the same embedded inputs, alternately, ``--repeats`` rounds, and
  the forward is scaled up from them: ``embed + 28 x plain`` and ``embed + 14 x plain + 14 x compressed``
  (``embed``: patch and caption embeddings, adaLN-single and the output layer, timed as a 0-block model).

Run: ``python benchmarks/bench_kv_compression.py --threads 2`` (one round: about two minutes on 2 idle cores; the
numbers in ``README.md``, two rounds on 2 cores shared with other work, took four).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import count_flops, load_average, machine, paired_times  # noqa: E402

from diffusers_pixart import PixArtTransformer2DModel  # noqa: E402

#: PixArt-XL/2 at 2048 px, as the released PixArt-Sigma-XL-2-2K-MS config has it.
XL2_2K = dict(
    num_layers=28,
    caption_channels=4096,
    sample_size=256,
    interpolation_scale=4,
    use_additional_conditions=False,
)
#: The Σ code's KV compression of its 2K/4K configs: 2 x 2, blocks 14-27, the convolution operator.
SIGMA_KV = dict(kv_compress_factor=2, kv_compress_layers=list(range(14, 28)), kv_compress_sampling="conv")
CAPTION_TOKENS = 300


def model_inputs(sample_size: int, device: str | torch.device = "cpu") -> dict:
    """Inputs of one forward: latents (1, 4, s, s), a caption (1, 300, 4096) with its mask, a timestep."""
    g = torch.Generator().manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, 4, sample_size, sample_size, generator=g).to(device),
        encoder_hidden_states=torch.randn(1, CAPTION_TOKENS, 4096, generator=g).to(device),
        encoder_attention_mask=torch.ones(1, CAPTION_TOKENS, device=device),
        timestep=torch.tensor([500], device=device),
    )


def forward_flops(**config) -> int:
    """FLOPs of one forward of an XL/2 model with ``config``, counted on the meta device."""
    with torch.device("meta"):
        model = PixArtTransformer2DModel(**config).eval()
        inputs = model_inputs(config["sample_size"], "meta")
    with torch.no_grad():
        return count_flops(lambda: model(**inputs))


def block_times(repeats: int) -> dict[str, list[float]]:
    """Seconds of one plain and one compressed XL/2 block at 2048 px (same weights), and of the 0-block model."""
    torch.manual_seed(0)
    model = PixArtTransformer2DModel(**{**XL2_2K, "num_layers": 2}, kv_compress_factor=2, kv_compress_layers=[1])
    model.eval()
    plain, compressed = model.transformer_blocks
    state = plain.state_dict()
    state.update({f"attn1.kv_compress.{k}": v for k, v in compressed.attn1.kv_compress.state_dict().items()})
    compressed.load_state_dict(state)
    outside = PixArtTransformer2DModel(**{**XL2_2K, "num_layers": 0}).eval()

    def embedded(sample_size: int) -> tuple:
        inputs = model_inputs(sample_size)
        x, caption, t, _, bias = model.embed(
            inputs["hidden_states"],
            inputs["encoder_hidden_states"],
            inputs["timestep"],
            None,
            inputs["encoder_attention_mask"],
        )
        return x, caption, t, bias, {"grid_size": (sample_size // 2, sample_size // 2)}

    with torch.no_grad():
        small = embedded(16)
        for block in (plain, compressed):  # warm-up at 64 tokens: one-off set-up, not the 2048 px cost
            block(*small)
        full, inputs = embedded(XL2_2K["sample_size"]), model_inputs(XL2_2K["sample_size"])
        return paired_times(
            {
                "plain block": lambda: plain(*full),
                "compressed block": lambda: compressed(*full),
                "embeddings and output layer": lambda: outside(**inputs),
            },
            torch.device("cpu"),
            repeats,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=1, help="Timed rounds (one run of each part per round).")
    parser.add_argument("--threads", type=int, default=2, help="torch threads.")
    parser.add_argument("--json", default=None, help="Also write the results to this JSON file.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {machine(torch.device('cpu'))}, {load_average()}")

    flops = {"plain": forward_flops(**XL2_2K), "Σ KV": forward_flops(**XL2_2K, **SIGMA_KV)}
    times = {label: statistics.median(values) for label, values in block_times(args.repeats).items()}
    outside, plain, compressed = (times[k] for k in ("embeddings and output layer", "plain block", "compressed block"))
    seconds = {"plain": outside + 28 * plain, "Σ KV": outside + 14 * plain + 14 * compressed}

    print(f"\nXL/2 forward at 2048 px (16384 tokens, {CAPTION_TOKENS}-token caption, batch 1, float32)\n")
    print("| model | GFLOP per forward | CPU s per forward (scaled from blocks) |")
    print("|---|---|---|")
    for label in flops:
        print(f"| {label} | {flops[label] / 1e9:,.0f} | {seconds[label]:.0f} |")
    print(f"\nΣ KV / plain: FLOPs {flops['Σ KV'] / flops['plain']:.2f}, time {seconds['Σ KV'] / seconds['plain']:.2f}")
    print(
        f"one block: plain {plain:.1f} s, compressed {compressed:.1f} s ({compressed / plain:.2f}); "
        f"embeddings and output layer {outside:.1f} s; {load_average()}"
    )
    if args.json:
        result = {"flops": flops, "seconds": seconds, "block_seconds": times, "threads": args.threads}
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
