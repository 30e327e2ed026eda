"""Inference benchmark: our PixArtAlphaPipeline against diffusers' on the same weights and inputs, in one process.

Prints, per configuration, the median wall time of each pipeline over ``--repeats`` runs (after one warm-up), the
ratio ours / diffusers' and the max abs difference of the images. Configurations:

- ``tiny``: the test components of :mod:`diffusers_pixart.tiny` (256px, 2 blocks of width 24);
- ``xl256``: the full PixArt-XL/2 transformer (28 blocks, width 1152, 611M parameters) at 256px with random weights,
  an sd-vae-ft-ema-shaped VAE, and a one-block T5 of width 4096 standing in for T5-XXL (so the timing is the
  transformer's and the VAE's, not the text encoder's).

Run: ``python benchmarks/bench_inference.py --configs tiny xl256 --steps 2 --repeats 3``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import diffusers
import numpy as np
import torch
from diffusers import AutoencoderKL, DPMSolverMultistepScheduler

from diffusers_pixart import PixArtAlphaPipeline, PixArtTransformer2DModel
from diffusers_pixart.tiny import make_components, make_text_encoder, make_tokenizer


def xl256_components() -> dict:
    """PixArt-XL/2 at 256px with random weights; a small T5 of the real width."""
    torch.manual_seed(0)
    tokenizer = make_tokenizer()
    return {
        "tokenizer": tokenizer,
        "text_encoder": make_text_encoder(len(tokenizer), d_model=4096, num_layers=1, num_heads=64),
        "vae": AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            sample_size=256,
        ).eval(),
        "transformer": PixArtTransformer2DModel(sample_size=32, caption_channels=4096).eval(),
        "scheduler": DPMSolverMultistepScheduler(),
    }


CONFIGS = {"tiny": make_components, "xl256": xl256_components}


def twin_pipelines(components: dict) -> tuple[PixArtAlphaPipeline, diffusers.PixArtAlphaPipeline]:
    """Ours and diffusers' pipeline sharing every component but the transformer, which has the same weights."""
    theirs_transformer = diffusers.PixArtTransformer2DModel.from_config(components["transformer"].config).eval()
    theirs_transformer.load_state_dict(components["transformer"].state_dict(), strict=True)
    ours = PixArtAlphaPipeline(**components)
    theirs = diffusers.PixArtAlphaPipeline(**{**components, "transformer": theirs_transformer})
    for pipe in (ours, theirs):
        pipe.set_progress_bar_config(disable=True)
    return ours, theirs


def time_pipeline(pipe, steps: int, repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds of one generation (prompt to image array) over ``repeats`` runs after a warm-up."""
    times, image = [], None
    for run in range(repeats + 1):
        start = time.perf_counter()
        image = pipe(
            "a red circle above a blue square",
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(0),
            output_type="np",
        ).images
        if run:
            times.append(time.perf_counter() - start)
    return statistics.median(times), image


def main() -> None:
    """Run the chosen configurations and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["tiny", "xl256"], choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=2, help="Denoising steps per generation.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs per pipeline (after one warm-up).")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, diffusers {diffusers.__version__}")
    print(f"{'config':8} {'ours (s)':>10} {'diffusers (s)':>14} {'ratio':>7} {'max abs diff':>13}")
    for name in args.configs:
        with torch.no_grad():
            ours, theirs = twin_pipelines(CONFIGS[name]())
            ours_time, ours_image = time_pipeline(ours, args.steps, args.repeats)
            theirs_time, theirs_image = time_pipeline(theirs, args.steps, args.repeats)
        diff = float(np.abs(ours_image - theirs_image).max())
        print(f"{name:8} {ours_time:10.3f} {theirs_time:14.3f} {ours_time / theirs_time:7.3f} {diff:13.2e}")


if __name__ == "__main__":
    main()
