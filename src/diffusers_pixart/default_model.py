"""The model that serves when none is named: the embedded toy model, or else a tiny random pipeline."""

from __future__ import annotations

from pathlib import Path

import torch

from .hub import LORA_WEIGHT_NAME
from .pipelines.auto import pipeline_class
from .pipelines.pixart_alpha import PixArtAlphaPipeline

#: The embedded default model: a pipeline folder shipped inside the package, trained on the toy world.
TOY_MODEL_PATH = Path(__file__).parent / "toy_model"

#: The folder where a model keeps the LCM-LoRA distilled from it (``examples/toy/run_distill.py --install``): the
#: ``lcm`` sampler loads it when no other LoRA is named.
LCM_LORA_DIR = "lcm_lora"

#: What the fallback is called wherever it is shown, so nobody takes its noise for a trained model.
RANDOM_MODEL_LABEL = "tiny randomly initialised pipeline (untrained: its images are noise)"


def shipped_lcm_lora(model: str | None) -> Path | None:
    """The LCM-LoRA a local model folder (or, for ``None``, the embedded model) ships in :data:`LCM_LORA_DIR`."""
    path = (TOY_MODEL_PATH if model is None else Path(model)) / LCM_LORA_DIR
    return path if (path / LORA_WEIGHT_NAME).is_file() else None


def sampler_lora(model: str | None, sampler: str, lora: str | None) -> str | None:
    """The LoRA to load: ``lora`` if named, else for the ``lcm`` sampler the model's own LCM-LoRA (if it ships one)."""
    if lora is not None or sampler != "lcm":
        return lora
    shipped = shipped_lcm_lora(model)
    return None if shipped is None else str(shipped)


def fuse_lora_weights(pipe: PixArtAlphaPipeline) -> None:
    """Merge the transformer's loaded LoRA into its base weights and drop the LoRA layers, as diffusers'
    ``fuse_lora()`` then ``unload_lora_weights()`` do for inference: the same images (within float32 rounding of the
    merged weights) without the adapter's extra matmuls per layer. The T5 rows a pivotal-tuning LoRA wrote stay (only
    the transformer's layers go); the pipeline can no longer switch the LoRA off or unfuse it.
    """
    pipe.fuse_lora()
    pipe.transformer.unload_lora()


def load_pipeline(
    model: str | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    low_memory: bool = False,
    lora: str | None = None,
    lora_scale: float = 1.0,
    fuse_lora: bool = False,
) -> tuple[PixArtAlphaPipeline, str]:
    """Load ``model`` (a pipeline folder or Hub id), or the default model; returns the pipeline and its description.

    ``model`` loads as a :class:`~.pipelines.pixart_sigma.PixArtSigmaPipeline` when its ``model_index.json`` names a
    PixArt-Σ pipeline, else as a :class:`PixArtAlphaPipeline` (:func:`.pipelines.auto.pipeline_class`). Without
    ``model``: the embedded toy model when the package ships it, else :func:`.tiny.make_pipeline` (described by
    :data:`RANDOM_MODEL_LABEL`). ``low_memory``: the pipeline's low-memory mode (``from_pretrained(low_memory=True)``;
    the random fallback, which has no folder to reload T5 from, keeps it). ``lora``: a LoRA folder, file or Hub id
    loaded with ``load_lora_weights`` (e.g. an LCM-LoRA), at the weight ``lora_scale`` (``set_adapters``) and, with
    ``fuse_lora``, merged into the weights (:func:`fuse_lora_weights`).

    Raises:
        ValueError: ``model`` is a folder without ``model_index.json``; ``lora_scale`` other than 1 or ``fuse_lora``
            without a ``lora``.
    """
    if lora is None and (fuse_lora or lora_scale != 1.0):
        raise ValueError("A LoRA scale or fusing needs a LoRA: name one (--lora), or use a sampler that loads one.")
    if model is not None:
        if Path(model).exists() and not (Path(model) / "model_index.json").is_file():
            raise ValueError(f"{model} is not a pipeline folder: it has no model_index.json.")
        pipe = pipeline_class(model).from_pretrained(model, dtype=dtype, low_memory=low_memory)
        description = model
    elif (TOY_MODEL_PATH / "model_index.json").is_file():
        pipe = PixArtAlphaPipeline.from_pretrained(TOY_MODEL_PATH, dtype=dtype, low_memory=low_memory)
        description = "embedded toy model"
    else:
        from .tiny import make_pipeline

        pipe, description = make_pipeline(), RANDOM_MODEL_LABEL
        if dtype != torch.float32:
            pipe = pipe.to(dtype=dtype)
        if low_memory:
            pipe.enable_low_memory(drop_text_encoder=False)
    if lora is not None:
        pipe.load_lora_weights(lora)
        if lora_scale != 1.0:
            pipe.set_adapters(pipe.get_active_adapters(), [lora_scale])
        description += f" + LoRA {lora}" + (f" x {lora_scale:g}" if lora_scale != 1.0 else "")
    pipe = pipe.to(device)
    if fuse_lora:
        fuse_lora_weights(pipe)
        description += " (fused)"
    return pipe, description


def load_sampling_pipeline(
    model: str | None,
    sampler: str,
    lora: str | None = None,
    *,
    lora_scale: float = 1.0,
    fuse_lora: bool | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    low_memory: bool = False,
) -> tuple[PixArtAlphaPipeline, str]:
    """The pipeline that ``pixart generate`` and ``pixart eval`` sample with: :func:`load_pipeline` with the LoRA of
    :func:`sampler_lora` and the ``sampler`` (a name of :data:`.schedulers.SCHEDULERS`) set; returns it and its
    description.

    ``fuse_lora``: ``None`` (the default) fuses the model's own LCM-LoRA, which the ``lcm`` sampler loads by itself
    (it is part of how the model serves that sampler), and leaves a ``lora`` the caller named as a separate adapter,
    as ``load_lora_weights`` does in diffusers; ``True`` / ``False`` fuse or keep separate whichever LoRA is loaded
    (``True`` without one is an error, ``False`` is then nothing to do).
    """
    loaded = sampler_lora(model, sampler, lora)
    if fuse_lora is None:
        fuse_lora = lora is None and loaded is not None
    pipe, description = load_pipeline(
        model, device, dtype, low_memory=low_memory, lora=loaded, lora_scale=lora_scale, fuse_lora=fuse_lora
    )
    pipe.set_scheduler(sampler)
    return pipe, description
