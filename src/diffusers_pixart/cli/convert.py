"""``pixart convert``: official checkpoints and DiTs to diffusers-format folders, and back to the original layout.

- ``pixart convert original PATH OUT_DIR [--sample-size N]``: an official PixArt-α or PixArt-Σ ``.pth`` (Σ's KV
  compression weights and 300-token null caption included).
- ``pixart convert dit PATH_OR_ID OUT_DIR``: a DiT (diffusers folder, Hub id or original ``.pt``) re-parameterized to
  a text-to-image PixArt model, the stage-1 init of the paper.
- ``pixart convert controlnet PATH OUT_DIR``: an official PixArt ControlNet ``.pth`` (such as
  ``PixArt-XL-2-1024-ControlNet.pth``) to ``OUT_DIR/controlnet`` and, when the file holds its base (the original
  training saves it), ``OUT_DIR/transformer``.
- ``pixart convert to-original MODEL_DIR OUT.pth``: a diffusers-format transformer back to the official layout.

With ``--pipeline --components REPO_OR_DIR`` the first three write a full pipeline folder whose tokenizer, text encoder,
VAE and scheduler come from ``REPO_OR_DIR`` (and, for a ControlNet file without its base, the transformer); an
``original`` checkpoint makes a ``PixArtSigmaPipeline`` when it is a Σ one (KV compression, or a 300-token null
caption), a ``PixArtAlphaPipeline`` when its null caption has another length, else the class ``REPO_OR_DIR`` names.
Folders are written beside ``OUT_DIR`` and renamed into place, so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..atomic import atomic_dir, atomic_file
from ..models import conversion
from ..models.controlnet import PixArtControlNetModel
from ..models.pixart_transformer import PixArtTransformer2DModel

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``convert`` sub-command and its ``original``, ``dit``, ``controlnet`` and ``to-original`` forms."""
    parser = subparsers.add_parser("convert", help="Convert checkpoints: original PixArt, DiT, back to original.")
    kinds = parser.add_subparsers(dest="kind", required=True)

    original = kinds.add_parser("original", help="An official PixArt-α or -Σ .pth to a diffusers-format folder.")
    original.set_defaults(func=run_original)
    control = kinds.add_parser("controlnet", help="An official PixArt ControlNet .pth (and its base) to diffusers.")
    control.set_defaults(func=run_controlnet)
    for sub in (original, control):
        sub.add_argument("path", help="The .pth / .pt / .safetensors checkpoint of the original code.")
        sub.add_argument("out_dir", help="Output folder (must not exist or be empty).")
        sub.add_argument("--sample-size", type=int, default=None, help="Latent size (image size / 8), if untold.")
        sub.add_argument("--no-ema", action="store_true", help="Take the raw weights even when EMA ones exist.")

    dit = kinds.add_parser("dit", help="A class-conditional DiT to a text-to-image PixArt model (stage-1 init).")
    dit.add_argument("dit", help="A diffusers DiT folder, a Hub id (e.g. facebook/DiT-XL-2-256) or an original .pt.")
    dit.add_argument("out_dir", help="Output folder (must not exist or be empty).")
    dit.add_argument("--timestep", type=int, default=conversion.REPARAM_TIMESTEP, help="Re-parameterization t*.")
    dit.add_argument("--caption-channels", type=int, default=4096, help="Caption feature channels (T5-XXL: 4096).")
    dit.add_argument("--sample-size", type=int, default=None, help="Latent size, for an original .pt without one.")
    dit.set_defaults(func=run_dit)

    for sub in (original, dit, control):
        sub.add_argument("--num-heads", type=int, default=None, help="Attention heads, for a non-standard width.")
        sub.add_argument("--pipeline", action="store_true", help="Write a full pipeline folder (needs --components).")
        sub.add_argument("--components", default=None, help="Pipeline folder or Hub id giving the other components.")

    back = kinds.add_parser("to-original", help="A diffusers-format transformer to an official-layout checkpoint.")
    back.add_argument("model", help="A transformer folder, or a pipeline folder with a transformer/ subfolder.")
    back.add_argument("out", help="Output .pth (or .safetensors) file.")
    back.set_defaults(func=run_to_original)


def write_folder(out_dir: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh folder beside ``out_dir``, then rename it to ``out_dir``.

    ``out_dir`` must not exist, or be an empty folder; on any error nothing is left behind.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ValueError(f"{out_dir} already exists and is not an empty folder.")
    with atomic_dir(out_dir) as tmp:
        write(tmp)
    return out_dir


def _overrides(args: argparse.Namespace) -> dict:
    overrides = {}
    if args.num_heads is not None:
        overrides["num_attention_heads"] = args.num_heads
    if getattr(args, "sample_size", None) is not None and args.kind == "dit":
        overrides["sample_size"] = args.sample_size
    return overrides


def _check_pipeline_args(args: argparse.Namespace) -> None:
    """``--pipeline`` and ``--components`` go together."""
    if args.pipeline and args.components is None:
        raise ValueError("--pipeline needs --components REPO_OR_DIR for the tokenizer, text encoder, VAE, scheduler.")
    if args.components is not None and not args.pipeline:
        raise ValueError("--components is only used with --pipeline.")


def _pipeline(args: argparse.Namespace, pipeline_class: type, **components: Any) -> DiffusionPipeline:
    """A ``pipeline_class`` of ``components`` and, for the others, those of ``--components``; checked to fit."""
    pipe = pipeline_class.from_pretrained(args.components, **components)
    model = pipe.transformer
    if pipe.text_encoder is not None and pipe.text_encoder.config.d_model != model.config.caption_channels:
        raise ValueError(
            f"The text encoder of {args.components} gives {pipe.text_encoder.config.d_model} channels, the model "
            f"expects caption_channels={model.config.caption_channels}."
        )
    if pipe.vae.config.latent_channels != model.config.in_channels:
        raise ValueError(
            f"The VAE of {args.components} has {pipe.vae.config.latent_channels} latent channels, the model "
            f"takes {model.config.in_channels}."
        )
    return pipe


def _save(model: PixArtTransformer2DModel, args: argparse.Namespace) -> Path:
    """Save ``model`` (and its original null caption, if any) as a transformer or a pipeline folder."""
    _check_pipeline_args(args)
    pipe = None
    null_caption = getattr(model, conversion.NULL_CAPTION_ATTRIBUTE, None)
    if args.pipeline:
        from ..pipelines.auto import pipeline_class
        from ..pipelines.pixart_alpha import PixArtAlphaPipeline
        from ..pipelines.pixart_sigma import SIGMA_MAX_SEQUENCE_LENGTH, PixArtSigmaPipeline

        # The checkpoint tells its family when it can (Σ: KV compression or a 300-row null caption; α: other rows):
        # Σ's components repo on the Hub, pixart_sigma_sdxlvae_T5_diffusers, does not reliably name Σ's pipeline.
        rows = None if null_caption is None else null_caption.shape[0]
        if model.config.kv_compress_factor > 1 or rows == SIGMA_MAX_SEQUENCE_LENGTH:
            cls = PixArtSigmaPipeline
        else:
            cls = PixArtAlphaPipeline if rows is not None else pipeline_class(args.components)
        pipe = _pipeline(args, cls, transformer=model)

    def write(folder: Path) -> None:
        if pipe is not None:
            pipe.save_pretrained(folder)
        else:
            model.save_pretrained(folder)
        if null_caption is not None:
            conversion.save_null_caption(null_caption, folder / "transformer" if pipe is not None else folder)

    return write_folder(args.out_dir, write)


def run_original(args: argparse.Namespace) -> int:
    """Convert an official PixArt checkpoint."""
    model = PixArtTransformer2DModel.from_original(
        args.path, sample_size=args.sample_size, ema=False if args.no_ema else None, **_overrides(args)
    )
    out = _save(model, args)
    kept = " and its null caption" if hasattr(model, conversion.NULL_CAPTION_ATTRIBUTE) else ""
    print(f"{args.path}: {model.config.num_layers} blocks, sample size {model.config.sample_size}")
    config = model.config
    if config.kv_compress_factor > 1:
        layers = config.kv_compress_layers if config.kv_compress_layers is not None else "all"
        print(f"KV compression {config.kv_compress_factor}x ({config.kv_compress_sampling}) in blocks {layers}")
    print(f"model{kept} in {out}")
    return 0


def run_dit(args: argparse.Namespace) -> int:
    """Re-parameterize a DiT and print the parameter counts."""
    dit = conversion.load_dit(args.dit, **_overrides(args))
    model = PixArtTransformer2DModel.from_dit(
        dit, reparam_timestep=args.timestep, caption_channels=args.caption_channels
    )
    counts = conversion.parameter_counts(model)
    print(f"DiT: {conversion.dit_parameter_count(dit):,} parameters")
    print(f"PixArt, adaLN-single: {counts['adaln_single']:,} parameters (per-block adaLN: {counts['adaln']:,})")
    print(f"model in {_save(model, args)}")
    return 0


def run_controlnet(args: argparse.Namespace) -> int:
    """Convert an official ControlNet checkpoint and the base saved with it (folders, or one pipeline folder)."""
    _check_pipeline_args(args)
    controlnet, base = conversion.controlnet_from_original(
        PixArtControlNetModel,
        args.path,
        sample_size=args.sample_size,
        ema=False if args.no_ema else None,
        **_overrides(args),
    )
    pipe = None
    if args.pipeline:
        from ..pipelines.pixart_alpha_controlnet import PixArtAlphaControlNetPipeline

        saved = {} if base is None else {"transformer": base}
        pipe = _pipeline(args, PixArtAlphaControlNetPipeline, controlnet=controlnet, **saved)
    null_caption = getattr(base, conversion.NULL_CAPTION_ATTRIBUTE, None)

    def write(folder: Path) -> None:
        if pipe is not None:
            pipe.save_pretrained(folder)
        else:
            controlnet.save_pretrained(folder / "controlnet")
            if base is not None:
                base.save_pretrained(folder / "transformer")
        if null_caption is not None:
            conversion.save_null_caption(null_caption, folder / "transformer")

    out = write_folder(args.out_dir, write)
    print(f"{args.path}: {controlnet.config.num_layers} block copies of hidden size {controlnet.inner_dim}")
    if base is not None:
        print(f"its base: {base.config.num_layers} blocks, sample size {base.config.sample_size}")
    elif pipe is not None:
        print(f"no base in the file: the transformer of {args.components}")
    print(f"{'pipeline' if pipe is not None else 'models'} in {out}")
    return 0


def run_to_original(args: argparse.Namespace) -> int:
    """Write a diffusers-format transformer as an official-layout checkpoint ``{"state_dict": ...}``."""
    folder = Path(args.model)
    if (folder / "transformer" / "config.json").is_file():
        folder = folder / "transformer"
    model = PixArtTransformer2DModel.from_pretrained(folder)
    state_dict = model.to_original(null_caption=conversion.load_null_caption(folder))
    out = Path(args.out)
    if out.suffix not in (".pth", ".pt", ".safetensors"):
        raise ValueError(f"The output must be a .pth, .pt or .safetensors file, got {out}.")
    with atomic_file(out) as tmp:
        if out.suffix == ".safetensors":
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in state_dict.items()}, tmp)
        else:
            torch.save({"state_dict": state_dict}, tmp)
    print(f"{len(state_dict)} tensors in {out}")
    return 0
