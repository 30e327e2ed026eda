"""DreamBooth for PixArt-alpha (paper appendix A.9): teach the model a subject from a handful of images.

The paper's recipe: full fine-tune of the transformer, learning rate 5e-6, 300 steps, no prior preservation, every
image captioned with one instance prompt ("a photo of sks dog"). These are :class:`DreamBoothConfig`'s defaults.

``--lora_rank R`` trains a LoRA adapter instead (peft; ``--lora_target_modules``, ``--lora_alpha``): the transformer's
own weights stay frozen and the result is ``<output_dir>/lora/pytorch_lora_weights.safetensors``, which
``PixArtAlphaPipeline.load_lora_weights(folder)`` loads. LoRA usually wants a larger learning rate than the full
fine-tune's (e.g. ``--learning_rate 1e-4``).

``--add_tokens sks`` adds the identifier as a new token (:func:`diffusers_pixart.text.add_tokens`) with a new row in
the frozen T5's embeddings: for tokenizers that would read it as ``<unk>`` (the toy world's word-level one). The
full fine-tune saves the grown tokenizer and text encoder in its pipeline; a LoRA run saves them next to its weights
(``<output_dir>/lora/tokenizer``, ``.../text_encoder``), and :func:`load_dreambooth_lora` puts the three together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig
from transformers import T5EncoderModel, T5Tokenizer

from ..data.streaming import ImageTextLoader, load_streaming_dataset
from ..pipelines.pixart_alpha import PixArtAlphaPipeline
from ..text import add_tokens, preprocess_captions
from .conditioning import CaptionConditioning
from .config import option, run_command
from .engine import make_accelerator
from .parameters import AllParameters, LoraAdapter
from .stages import (
    Stage2Config,
    check_base_unchanged,
    image_loader_options,
    load_pipeline,
    train_with_iddpm,
    with_sequence_length,
)


@dataclass
class DreamBoothConfig(Stage2Config):
    """The engine's and stage 2's options with the paper's DreamBooth defaults, plus the instance data and prompt."""

    instance_data: str = option("", "Folder of the subject's images (or a Hub dataset id / imagefolder source).")
    instance_prompt: str = option("", "The caption of every instance image, with the new token: 'a photo of sks dog'.")
    learning_rate: float = option(5e-6, "AdamW learning rate (the paper's DreamBooth: 5e-6).")
    max_train_steps: int = option(300, "Optimizer steps (the paper's DreamBooth: 300).")
    lr_warmup_steps: int = option(0, "Warm-up steps of the constant learning rate.")
    train_batch_size: int = option(1, "Batch size per device.")
    caption_dropout: float = option(0.0, "Probability of training on the null caption instead of the instance prompt.")
    use_ema: bool = option(False, "Keep an EMA of the weights (off: 300 steps are too few for one).")
    max_grad_norm: float = option(1.0, "Gradient clipping norm; 0 disables it.")
    shuffle_buffer_size: int = option(16, "Shuffle buffer over the instance images.")
    lora_rank: int = option(0, "Rank of a LoRA adapter to train instead of the whole transformer (0: full fine-tune).")
    lora_alpha: float | None = option(None, "LoRA alpha (the adapter is scaled by alpha / rank); default: the rank.")
    lora_target_modules: list[str] = option(
        ["to_q", "to_k", "to_v", "to_out.0"], "Transformer layers (name suffixes) that get a LoRA adapter."
    )
    add_tokens: list[str] = option(
        [],
        "New words (e.g. 'sks') added to the tokenizer, each one token with a new (seeded, then frozen) row of the T5 "
        "embeddings; saved with the result.",
    )


def add_lora_adapter(transformer: torch.nn.Module, config: DreamBoothConfig) -> None:
    """Attach the ``--lora_rank`` adapter (seeded by ``--seed``), which :class:`~.parameters.LoraAdapter` trains."""
    if config.lora_rank < 0:
        raise ValueError(f"--lora_rank must be at least 1 for LoRA (0: full fine-tune), got {config.lora_rank}.")
    torch.manual_seed(config.seed)
    transformer.add_adapter(
        LoraConfig(
            r=config.lora_rank,
            lora_alpha=config.lora_alpha if config.lora_alpha is not None else config.lora_rank,
            target_modules=list(config.lora_target_modules),
        )
    )


def check_prompt_words(tokenizer: Any, prompt: str) -> None:
    """Raise a ``ValueError`` naming the words of ``prompt`` that ``tokenizer`` reads as ``<unk>`` (punctuation aside).

    A word-level tokenizer maps an identifier it lacks to ``<unk>``, like every other unknown word: the model could
    not tell the subject from anything unknown. ``--add_tokens`` adds it.
    """
    unk = tokenizer.unk_token_id
    words = preprocess_captions(prompt)[0].replace(",", " ").replace(".", " ").split()
    unknown = [word for word in words if unk is not None and unk in tokenizer(word, add_special_tokens=False).input_ids]
    if unknown:
        raise ValueError(
            f"The tokenizer reads {unknown} of the instance prompt {prompt!r} as <unk>: add new words with "
            f"--add_tokens {' '.join(unknown)}."
        )


def train_dreambooth(config: DreamBoothConfig) -> Path:
    """Fine-tune on the instance images (the whole transformer or a LoRA adapter); returns the saved result folder
    (``<output_dir>/pipeline`` or ``<output_dir>/lora``).

    Raises:
        ValueError, FileNotFoundError: bad options or data (before any step).
    """
    if not config.instance_data or not config.instance_prompt.strip():
        raise ValueError("--instance_data and --instance_prompt are required.")
    if config.add_tokens and config.lora_rank and config.push_to_hub:
        raise ValueError(
            "--push_to_hub uploads only the LoRA weights, not the tokenizer and T5 that --add_tokens grew: push a "
            "full fine-tune, or upload <output_dir>/lora yourself."
        )
    if config.lora_rank:
        check_base_unchanged(config, "a LoRA weights file")
    prompt = config.instance_prompt.strip()
    config = with_sequence_length(config)
    pipeline = load_pipeline(config)
    card_info: dict[str, Any] = {"stage": "DreamBooth", "instance prompt": prompt}
    if config.add_tokens:
        add_tokens(pipeline.tokenizer, pipeline.text_encoder, config.add_tokens, seed=config.seed)
        card_info["new tokens"] = " ".join(config.add_tokens)
    check_prompt_words(pipeline.tokenizer, prompt)
    if config.lora_rank:
        add_lora_adapter(pipeline.transformer, config)
        card_info["LoRA rank"] = config.lora_rank
        parameters = LoraAdapter(pipeline, save_text_encoder=bool(config.add_tokens))
    else:
        parameters = AllParameters(pipeline)
    conditioning = CaptionConditioning(config, pipeline)
    accelerator = make_accelerator(config)
    images = load_streaming_dataset(config.instance_data).map(lambda record: {"text": prompt})
    data = ImageTextLoader(images, caption_column="text", **image_loader_options(config, accelerator))
    return train_with_iddpm(config, accelerator, pipeline, data, conditioning, parameters, card_info)


def load_dreambooth_lora(pretrained: str | os.PathLike, lora_dir: str | os.PathLike) -> PixArtAlphaPipeline:
    """The base pipeline ``pretrained`` with a DreamBooth LoRA result folder: its weights, and its tokenizer and text
    encoder when the run added tokens (``--add_tokens``)."""
    lora_dir = Path(lora_dir)
    text = {}
    if (lora_dir / "tokenizer").is_dir():
        text = {
            "tokenizer": T5Tokenizer.from_pretrained(lora_dir / "tokenizer"),
            "text_encoder": T5EncoderModel.from_pretrained(lora_dir / "text_encoder"),
        }
    pipeline = PixArtAlphaPipeline.from_pretrained(pretrained, **text)
    pipeline.load_lora_weights(lora_dir)
    return pipeline


#: The ``--help`` description of ``examples/train_dreambooth.py``.
DESCRIPTION = (
    "DreamBooth for PixArt-alpha (paper appendix A.9): teach the model a subject from a handful of images, each "
    "captioned with one instance prompt ('a photo of sks dog'). The paper's recipe is the default: full fine-tune of "
    "the transformer, learning rate 5e-6, 300 steps, no prior preservation; --lora_rank R trains a LoRA adapter "
    "instead."
)


def main_dreambooth(argv: list[str] | None = None) -> int:
    """Command-line entry: parse flags (and ``--config``), fine-tune, save (and push); a bad input exits with 2."""
    return run_command(DreamBoothConfig, train_dreambooth, argv, DESCRIPTION)
