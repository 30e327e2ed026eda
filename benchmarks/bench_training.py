"""Training-step benchmark: our PixArtTransformer2DModel against diffusers' in the same loop, same weights and data.

One step is the forward pass on noisy latents, the epsilon-MSE loss on the first ``in_channels`` output channels,
the backward pass and an AdamW update. Reported per configuration: the median step time over ``--steps`` steps
(after one warm-up step), the ratio ours / diffusers', the max abs difference of the losses of every step and of the
weights after the last step, the peak memory, the FLOPs of one step (forward + backward, counted) and the achieved
FLOP/s as a fraction of the machine's peak (see ``common.py``). The two models run one after the other (ours first
unless ``--diffusers-first``), so only one set of weights and optimizer state is on the device at a time.

Configurations: ``toy`` (the tiny test transformer of :mod:`diffusers_pixart.tiny` at 256px, batch 8),
``toy-recipe`` (the toy recipe's stage-2 transformer, batch 32, the toy world's captions padded to 120 tokens as the
paper pads them) and ``xl256`` (PixArt-XL/2 at 256px, batch 2, 120 caption tokens of width 4096; about 10 GB in
float32 with AdamW). Ours runs as the training engine runs it: inside ``caption_cache(drop_padding=True)``, so its
cross-attention skips the caption columns that are padding in every row of the batch (``--keep-padding`` turns that
off); the FLOPs of a step are counted without it, so the MFU columns compare the same work.

``--mixed-precision bf16`` runs both forwards under ``torch.autocast`` (the loop accelerate's ``--mixed_precision
bf16`` runs; weights and AdamW stay float32); its fraction of peak is of the bf16 peak (on CPU derived from the
CPU's flags, AMX or AVX512-BF16, see ``common.cpu_flops_per_cycle``).

Run: ``python benchmarks/bench_training.py --configs toy --steps 5 --threads 1``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from contextlib import nullcontext
from functools import partial
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F
from common import (
    PeakMemory,
    count_flops,
    fraction_of_peak,
    load_average,
    machine,
    median_time,
    peak_flops,
    pick_device,
)

from diffusers_pixart import PixArtTransformer2DModel
from diffusers_pixart.models.attention import caption_cache
from diffusers_pixart.tiny import make_tokenizer, make_transformer
from diffusers_pixart.toy.world import sample_prompts, vocabulary

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "toy"))
from recipe import make_toy_transformer  # noqa: E402  (examples/toy/recipe.py)


def toy_caption_lengths(count: int) -> list[int]:
    """T5 token counts (with EOS) of ``count`` toy-world captions, as the toy recipe's tokenizer reads them."""
    tokenizer = make_tokenizer(vocabulary())
    return [len(ids) for ids in tokenizer([prompt.text for prompt in sample_prompts(count)]).input_ids]


#: --mixed-precision -> the autocast dtype of the forward (None: float32 throughout)
AUTOCAST = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}

#: name -> (model factory, batch, caption tokens, valid caption tokens per row or None for a synthetic mask)
CONFIGS = {
    "toy": (make_transformer, 8, 16, None),
    "toy-recipe": (make_toy_transformer, 32, 120, toy_caption_lengths),
    "xl256": (partial(PixArtTransformer2DModel, sample_size=32, caption_channels=4096), 2, 120, None),
}


def make_batches(
    model: torch.nn.Module,
    batch: int,
    tokens: int,
    count: int,
    device: torch.device,
    lengths: Callable[[int], list[int]] | None = None,
) -> list[dict]:
    """``count`` batches of noisy latents, timesteps, captions and masks, the same for both models.

    The masks keep the first ``lengths(batch * count)`` tokens of each row; without ``lengths``, the first half of
    every row and the second half of about half the rows.
    """
    g = torch.Generator().manual_seed(0)
    config = model.config
    side = config.sample_size
    valid = iter(lengths(batch * count)) if lengths is not None else None
    batches = []
    for _ in range(count):
        mask = torch.ones(batch, tokens, dtype=torch.long)
        if valid is not None:
            mask = (torch.arange(tokens)[None] < torch.tensor([next(valid) for _ in range(batch)])[:, None]).long()
        else:
            mask[:, tokens // 2 :] = (torch.rand(batch, 1, generator=g) > 0.5).long()
        batches.append(
            dict(
                hidden_states=torch.randn(batch, config.in_channels, side, side, generator=g).to(device),
                encoder_hidden_states=torch.randn(batch, tokens, config.caption_channels, generator=g).to(device),
                timestep=torch.randint(0, 1000, (batch,), generator=g).to(device),
                encoder_attention_mask=mask.to(device),
                noise=torch.randn(batch, config.in_channels, side, side, generator=g).to(device),
            )
        )
    return batches


def train_step(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, autocast: torch.dtype | None = None
) -> float:
    """Forward (under ``torch.autocast`` to ``autocast`` when given), epsilon-MSE, backward, AdamW; returns the loss."""
    inputs = {k: v for k, v in batch.items() if k != "noise"}
    device = batch["noise"].device.type
    with torch.autocast(device, dtype=autocast) if autocast else nullcontext():
        prediction = model(**inputs).sample[:, : model.config.in_channels]
    loss = F.mse_loss(prediction.float(), batch["noise"])
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def run_model(
    model: torch.nn.Module,
    batches: list[dict],
    device: torch.device,
    peak: float,
    compile_mode: str | None = None,
    drop_padding: bool = False,
    autocast: torch.dtype | None = None,
) -> dict:
    """Time ``len(batches) - 1`` steps after a warm-up step; ``compile_mode``: compile the forward (after counting);
    ``drop_padding``: run the steps inside ``caption_cache(drop_padding=True)`` (our model only); ``autocast``: the
    forward's mixed-precision dtype."""
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.03, eps=1e-10)
    inputs = {k: v for k, v in batches[0].items() if k != "noise"}
    flops = count_flops(lambda: model(**inputs).sample.sum().backward())
    optimizer.zero_grad(set_to_none=True)
    if compile_mode:
        model.forward = torch.compile(model.forward, fullgraph=True, mode=compile_mode)
        model(**inputs).sample.sum().backward()  # compiles forward and backward, outside the timing
        optimizer.zero_grad(set_to_none=True)
    steps = iter(batches)
    losses = []
    with PeakMemory(device) as memory, caption_cache(drop_padding=True) if drop_padding else nullcontext():
        seconds, _ = median_time(
            lambda: losses.append(train_step(model, optimizer, next(steps), autocast)), device, len(batches) - 1
        )
    return {
        "seconds": seconds,
        "losses": losses,
        "peak_memory_mb": memory.peak / 2**20,
        "gflop_per_step": flops / 1e9,
        "fraction_of_peak": fraction_of_peak(flops / seconds, peak),
        "weights": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }


def main() -> None:
    """Run the chosen configurations and print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["toy"], choices=list(CONFIGS))
    parser.add_argument("--steps", type=int, default=5, help="Timed steps (after one warm-up step).")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda.")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
    parser.add_argument(
        "--compile", default=None, choices=["default", "max-autotune-no-cudagraphs"], help="Ours compiled (fullgraph)."
    )
    parser.add_argument("--batch-size", type=int, default=None, help="Override the configuration's batch size.")
    parser.add_argument("--diffusers-first", action="store_true", help="Time diffusers' model first (order check).")
    parser.add_argument(
        "--keep-padding", action="store_true", help="Ours cross-attends to padded caption tokens too (as diffusers')."
    )
    parser.add_argument(
        "--mixed-precision", default="no", choices=list(AUTOCAST), help="Both forwards under torch.autocast."
    )
    parser.add_argument(
        "--cpu-flops-per-cycle", type=int, default=None, help="FLOP/cycle/core for the peak (default: from the flags)."
    )
    args = parser.parse_args()
    autocast = AUTOCAST[args.mixed_precision]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    peak_dtype = autocast or torch.float32
    peak, peak_source = peak_flops(device, peak_dtype, args.cpu_flops_per_cycle)
    precision = f"autocast {args.mixed_precision}" if autocast else "float32"
    print(f"{machine(device)}; diffusers {diffusers.__version__}; {precision}; {load_average()}")
    print(f"peak {peak / 1e9:.0f} GFLOP/s ({peak_source})")
    print("config   ours(s)  diffusers(s) ratio  loss|diff|  weight|diff|  GFLOP/step  ours-MFU  theirs-MFU  mem(MB)")
    for name in args.configs:
        factory, batch, tokens, lengths = CONFIGS[name]
        batch = args.batch_size or batch
        torch.manual_seed(0)
        ours = factory()
        state = {k: v.clone() for k, v in ours.state_dict().items()}
        batches = make_batches(ours, batch, tokens, args.steps + 1, device, lengths)
        theirs = diffusers.PixArtTransformer2DModel.from_config(dict(ours.config))
        theirs.load_state_dict(state, strict=True)
        models = {"ours": ours, "diffusers": theirs}
        del ours, theirs
        results = {}
        for label in ("diffusers", "ours") if args.diffusers_first else ("ours", "diffusers"):
            ours_only = dict(compile_mode=args.compile, drop_padding=not args.keep_padding) if label == "ours" else {}
            results[label] = run_model(
                models.pop(label), batches, device, peak, autocast=autocast, **ours_only
            )  # then freed
        ours_result, theirs_result = results["ours"], results["diffusers"]
        loss_diff = max(abs(a - b) for a, b in zip(ours_result["losses"], theirs_result["losses"]))
        weight_diff = max((ours_result["weights"][k] - theirs_result["weights"][k]).abs().max().item() for k in state)
        print(
            f"{name:8} {ours_result['seconds']:7.3f} {theirs_result['seconds']:12.3f} "
            f"{ours_result['seconds'] / theirs_result['seconds']:6.3f} {loss_diff:10.2e} {weight_diff:12.2e} "
            f"{ours_result['gflop_per_step']:11.2f} {ours_result['fraction_of_peak']:8.1%} "
            f"{theirs_result['fraction_of_peak']:10.1%}  {ours_result['peak_memory_mb']:.0f}/"
            f"{theirs_result['peak_memory_mb']:.0f}  ({load_average()})"
        )


if __name__ == "__main__":
    main()
