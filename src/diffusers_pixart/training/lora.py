"""Fine-tune an adapter (LoRA, DoRA, LoHa, LoKr) on your own captioned images: ``examples/train_lora.py``.

A composition of the engine's parts (:func:`~.engine.train`), as its docstring plans: stage 2's loader
(:func:`~.stages.make_loader`: imagefolder with ``metadata.jsonl``, Hub dataset, webdataset, parquet, or a features
folder), captions (:class:`LoraCaptions`, stage 2's :class:`~.conditioning.CaptionConditioning`), the transformer's
adapter (:class:`~.parameters.LoraAdapter`, with the trigger words and the family on its card) and
the IDDPM objective (with its noise offset for ``--noise_offset``). What this module adds is the choice of adapter
(:func:`adapter_config`, :func:`resolve_target_modules`) and the memory options:

- ``--base_dtype bf16``: the frozen base weights in bfloat16 (half the memory), the adapter in float32, the forward
  under ``--mixed_precision bf16`` autocast (required with it);
- ``--features DIR`` (precomputed by ``examples/extract_features.py``): the VAE's encoder and T5 never run during
  training. T5 is loaded alone on the CPU before the pipeline, encodes the null caption (for caption dropout) and the
  validation prompts, and is freed: the training pipeline has no text encoder. The VAE (84M parameters) stays for
  the validation images;
- ``--optimizer adamw8bit|came`` (:mod:`.optimizers`) and ``--gradient_checkpointing``.

``--train_text_encoder_embeddings`` (pivotal tuning, :mod:`.embeddings`) also trains the T5 input-embedding rows of
the trigger words' tokens, at ``--embedding_learning_rate``: the parts are wrapped (:class:`~.embeddings.TokenCaptions`,
:class:`~.embeddings.AdapterWithEmbeddings`), and the rows are saved next to the adapter.

Captions: ``--caption_column dense=0.7,short=0.3`` draws each image's caption from several columns by weight, the
same draw for a sample and epoch on every resume (``ImageTextLoader.pick_caption`` of ``diffusers_pixart.data``).
A features folder holds the one caption encoded at extraction (weights need ``--train_data``). ``--multi_scale`` puts
images into stage 3's aspect-ratio buckets; a model with micro-conditions (the 512 and 1024 px models) gets each
image's original size and bucket ratio. The model's grid and micro-condition embedders are its own (stage 3's
``--micro_conditions``/``--interpolation_scale`` change weights an adapter does not train, so they are not options).

The result, ``<output_dir>/lora/pytorch_lora_weights.safetensors``, loads with ``pipe.load_lora_weights(folder)``
(LoHa and LoKr through this package's loader, which reads the adapter type from the file's metadata).
"""

from __future__ import annotations

import gc
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import peft
import torch
from transformers import AutoTokenizer, T5EncoderModel

from ..data.features import encode_prompts
from ..data.streaming import caption_column_weights, load_streaming_dataset
from ..pipelines.auto import family_of
from .conditioning import CaptionConditioning, Conditioning
from .config import option, run_command
from .embeddings import AdapterWithEmbeddings, TokenCaptions, TokenEmbeddings, embedding_token_ids
from .engine import make_accelerator
from .optimizers import check_optimizer
from .parameters import LoraAdapter, TrainedParameters
from .stages import (
    Stage2Config,
    check_base_unchanged,
    check_data_options,
    load_pipeline,
    make_loader,
    train_with_iddpm,
    with_sequence_length,
)

#: The ``--adapter`` choices and the peft config each is made with.
ADAPTERS = ("lora", "dora", "loha", "lokr")
#: The ``--target_modules`` presets: layer-name suffixes of PixArt's transformer (``all``: every linear layer).
ATTENTION_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
FFN_MODULES = ("ff.net.0.proj", "ff.net.2")
TARGET_PRESETS = {"attention": ATTENTION_MODULES, "attention+ffn": ATTENTION_MODULES + FFN_MODULES, "all": None}
#: The dtypes of ``--base_dtype``.
BASE_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: Records of ``--train_data`` read before training to check that it has captions.
CAPTION_PROBE_RECORDS = 64

DESCRIPTION = (
    "Fine-tune a LoRA, DoRA, LoHa or LoKr adapter of a PixArt-alpha or PixArt-Sigma transformer on your own captioned "
    "images (imagefolder with metadata.jsonl, Hub dataset, webdataset, parquet, or precomputed features); the result "
    "is a pytorch_lora_weights.safetensors that pipe.load_lora_weights reads."
)


@dataclass
class LoraTrainingConfig(Stage2Config):
    """Stage 2's options with an adapter's defaults, plus the adapter, the captions and the memory options."""

    caption_column: str = option(
        "text",
        "Caption column of --train_data, or several with weights, e.g. 'dense=0.7,short=0.3': each image's caption "
        "is drawn from them by weight (the same draw for a sample and epoch on resume).",
    )
    multi_scale: bool = option(
        False,
        "Aspect-ratio buckets for --train_data (stage 3's): each batch holds images of one bucket; models with "
        "micro-conditions get each image's original size and bucket ratio.",
    )
    adapter: str = option("lora", "Adapter type (peft): lora, dora, loha or lokr.", choices=list(ADAPTERS))
    rank: int = option(16, "Adapter rank (LoKr: the rank of its factored second matrix).")
    alpha: float | None = option(None, "Adapter alpha: the update is scaled by alpha / rank; default: the rank.")
    target_modules: list[str] = option(
        ["attention"],
        "Layers that get the adapter: a preset (attention: to_q/k/v/out of self- and cross-attention; "
        "attention+ffn: and the feed-forward layers; all: every linear layer), or layer names (suffixes such as "
        "attn2.to_k or transformer_blocks.0.ff.net.2).",
    )
    trigger_words: list[str] = option([], "Words your captions use for the new concept or style (on the model card).")
    train_text_encoder_embeddings: bool = option(
        False,
        "Pivotal tuning: also train the T5 input-embedding rows of the --trigger_words' tokens (and of "
        "--train_embedding_tokens), every other row frozen; saved next to the adapter as "
        "text_encoder_embeddings.safetensors, which load_lora_weights writes into the pipeline's T5. Needs T5 "
        "(not with --features).",
    )
    train_embedding_tokens: list[str] = option(
        [],
        "With --train_text_encoder_embeddings: more tokens whose rows train, as the tokenizer writes them (e.g. "
        "'▁retro' for a SentencePiece word).",
    )
    embedding_learning_rate: float | None = option(
        None, "With --train_text_encoder_embeddings: the learning rate of the rows; default: --learning_rate."
    )
    noise_offset: float = option(0.0, "Noise offset: add offset x N(0, 1) per sample and channel to the noise.")
    base_dtype: str = option(
        "fp32",
        "dtype of the frozen base weights: bf16 halves them (needs --mixed_precision bf16).",
        choices=list(BASE_DTYPES),
    )
    learning_rate: float = option(1e-4, "Learning rate (adapters train at larger rates than full fine-tunes).")
    adam_weight_decay: float = option(1e-2, "Weight decay.")
    adam_epsilon: float = option(1e-8, "AdamW epsilon.")
    lr_warmup_steps: int = option(50, "Linear warm-up steps of the learning rate.")
    max_grad_norm: float = option(1.0, "Gradient clipping norm; 0 disables it.")
    max_train_steps: int = option(1000, "Optimizer steps to train for.")
    train_batch_size: int = option(4, "Batch size per device.")
    use_ema: bool = option(False, "Keep an EMA of the adapter's weights (saved in checkpoints, used for the result).")
    ema_decay: float = option(0.999, "EMA decay.")
    checkpointing_steps: int = option(250, "Save an (adapter-only) checkpoint every N optimizer steps and at the end.")
    validation_steps: int = option(250, "Render the validation prompts (one grid per validation) every N steps.")


# ------------------------------------------------------------------------------------------------------ checks
def check_lora_options(config: LoraTrainingConfig) -> None:
    """Raise a ``ValueError`` naming the first adapter or memory option that cannot work (before anything loads)."""
    if config.adapter not in ADAPTERS:
        raise ValueError(f"--adapter {config.adapter!r} is not one of {', '.join(ADAPTERS)}.")
    needed = {"lora": "LoraConfig", "dora": "LoraConfig", "loha": "LoHaConfig", "lokr": "LoKrConfig"}[config.adapter]
    if not hasattr(peft, needed):
        raise ValueError(f"--adapter {config.adapter}: peft {peft.__version__} has no {needed}; upgrade peft.")
    if config.rank <= 0:
        raise ValueError(f"--rank must be at least 1, got {config.rank}.")
    if config.alpha is not None and config.alpha <= 0:
        raise ValueError(f"--alpha must be positive, got {config.alpha}.")
    if not config.target_modules:
        raise ValueError("--target_modules is empty: give a preset (attention, attention+ffn, all) or layer names.")
    if config.noise_offset < 0:
        raise ValueError(f"--noise_offset must be >= 0, got {config.noise_offset}.")
    if config.base_dtype not in BASE_DTYPES:
        raise ValueError(f"--base_dtype {config.base_dtype!r} is not one of {', '.join(BASE_DTYPES)}.")
    if config.base_dtype == "bf16" and config.mixed_precision != "bf16":
        raise ValueError(
            "--base_dtype bf16 needs --mixed_precision bf16: autocast runs the bf16 base with the float32 adapter."
        )
    check_base_unchanged(config, "an adapter's weights file")
    check_embedding_options(config)
    check_optimizer(config.optimizer)
    columns = caption_column_weights(config.caption_column)
    if config.features is not None and len(columns) > 1:
        raise ValueError(
            f"--caption_column {config.caption_column!r} draws among several columns, which needs --train_data: a "
            "--features folder holds the one caption encoded at extraction."
        )


def check_embedding_options(config: LoraTrainingConfig) -> None:
    """Raise a ``ValueError`` naming the first text-encoder embedding option that cannot work."""
    if not config.train_text_encoder_embeddings:
        given = [name for name in ("train_embedding_tokens", "embedding_learning_rate") if getattr(config, name)]
        if given:
            raise ValueError(f"--{given[0]} needs --train_text_encoder_embeddings.")
        return
    if config.features is not None:
        raise ValueError(
            "--train_text_encoder_embeddings needs T5 during training, but --features holds precomputed T5 embeddings, "
            "which cannot change with the rows: train from --train_data."
        )
    if not config.trigger_words and not config.train_embedding_tokens:
        raise ValueError(
            "--train_text_encoder_embeddings needs tokens to train: give --trigger_words or --train_embedding_tokens."
        )
    for name in ("learning_rate", "embedding_learning_rate"):
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name} must be positive with --train_text_encoder_embeddings, got {value}.")


def check_captions(dataset: Any, columns: Sequence[str], source: str, probe: int = CAPTION_PROBE_RECORDS) -> None:
    """Raise a ``ValueError`` when ``dataset`` has none of the caption ``columns``, or none of its first ``probe``
    records has a caption in them (images without captions). Records without one later are skipped and counted."""
    present = dataset.column_names
    if present is not None and not set(columns) & set(present):
        raise ValueError(
            f"{source} has no caption column {list(columns)} (its columns: {present}). An image folder needs a "
            "metadata.jsonl with file_name and a caption per image; choose the column with --caption_column."
        )
    for record in itertools.islice(dataset, probe):
        if any(isinstance(record.get(column), str) and record[column].strip() for column in columns):
            return
    raise ValueError(
        f"The first records of {source} have no caption in {list(columns)}: images without captions cannot train a "
        "captioned adapter. Caption them first (examples/caption_llava.py) or choose the column with --caption_column."
    )


def check_trigger_words(tokenizer: Any, words: Sequence[str]) -> None:
    """Raise a ``ValueError`` naming the trigger words that ``tokenizer`` reads as ``<unk>`` (a word-level tokenizer's
    unknown words): neither the adapter nor a trained embedding row (``<unk>``'s is every unknown word's) could tell
    them from any other unknown word."""
    unk = tokenizer.unk_token_id
    unknown = [word for word in words if unk is not None and unk in tokenizer(word, add_special_tokens=False).input_ids]
    if unknown:
        raise ValueError(
            f"The tokenizer reads the trigger words {unknown} as <unk>: choose words it knows (train_lora does not add "
            "tokens; examples/train_dreambooth.py --add_tokens does)."
        )


# ------------------------------------------------------------------------------------------------------ adapter
def resolve_target_modules(targets: Sequence[str], transformer: torch.nn.Module) -> list[str]:
    """The layer names of ``targets`` (presets expanded; ``all``: every ``nn.Linear`` by its full name), checked
    against ``transformer``.

    Raises:
        ValueError: a name matches no layer, or matches a layer that is neither linear nor a convolution.
    """
    modules = dict(transformer.named_modules())
    names: list[str] = []
    for target in targets:
        if target in TARGET_PRESETS:
            preset = TARGET_PRESETS[target]
            if preset is None:
                preset = tuple(name for name, m in modules.items() if isinstance(m, torch.nn.Linear))
            names.extend(preset)
        else:
            names.append(target)
    names = list(dict.fromkeys(names))
    for name in names:
        matched = [m for key, m in modules.items() if key == name or key.endswith("." + name)]
        if not matched:
            raise ValueError(
                f"--target_modules {name!r} matches no layer of the transformer: use a preset "
                f"({', '.join(TARGET_PRESETS)}) or names such as to_q, attn2.to_k, ff.net.2."
            )
        layer = next((m for m in matched if not isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))), None)
        if layer is not None:
            raise ValueError(
                f"--target_modules {name!r} matches a {type(layer).__name__}: adapters go on linear and convolution "
                "layers only (e.g. attn1.to_q, not attn1)."
            )
    return names


def adapter_config(config: LoraTrainingConfig, transformer: torch.nn.Module) -> peft.PeftConfig:
    """The peft config of ``--adapter``, ``--rank``, ``--alpha`` and ``--target_modules`` for ``transformer``. The
    update starts at zero for every type (the adapted model is the base model at step 0)."""
    targets = resolve_target_modules(config.target_modules, transformer)
    alpha = config.alpha if config.alpha is not None else float(config.rank)
    if config.adapter in ("lora", "dora"):
        return peft.LoraConfig(
            r=config.rank, lora_alpha=alpha, target_modules=targets, use_dora=config.adapter == "dora"
        )
    kind = peft.LoHaConfig if config.adapter == "loha" else peft.LoKrConfig
    return kind(r=config.rank, alpha=alpha, target_modules=targets)


def add_adapter(transformer: torch.nn.Module, config: LoraTrainingConfig) -> None:
    """Attach the adapter (seeded by ``--seed``) and, with ``--base_dtype bf16``, store the frozen base in bfloat16
    while the adapter stays float32."""
    peft_config = adapter_config(config, transformer)
    torch.manual_seed(config.seed)
    transformer.add_adapter(peft_config)
    dtype = BASE_DTYPES[config.base_dtype]
    with torch.no_grad():
        for param in transformer.parameters():
            param.data = param.data.to(torch.float32 if param.requires_grad else dtype)


# ------------------------------------------------------------------------------------------------------ parts
@dataclass
class PromptEmbeddings:
    """T5 embeddings (1, L, C) and keep-masks (1, L) of the null caption, and (N, L, C)/(N, L) of the N validation
    prompts (None without prompts), encoded before training by :func:`encode_fixed_prompts`."""

    null: tuple[torch.Tensor, torch.Tensor]
    validation: tuple[torch.Tensor, torch.Tensor] | None


def encode_fixed_prompts(config: LoraTrainingConfig) -> PromptEmbeddings:
    """Load the tokenizer and T5 of ``--pretrained_model_name_or_path`` alone on the CPU, encode the null caption and
    the validation prompts, and free T5 again (for ``--features`` runs, whose pipeline then has no text encoder)."""
    source = config.pretrained_model_name_or_path
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
    text_encoder = T5EncoderModel.from_pretrained(source, subfolder="text_encoder").eval()
    length = config.max_sequence_length
    with torch.no_grad():
        null = encode_prompts(tokenizer, text_encoder, [""], max_length=length)
        prompts = list(config.validation_prompts) if config.validation_steps else []
        validation = encode_prompts(tokenizer, text_encoder, prompts, max_length=length) if prompts else None
    del text_encoder
    gc.collect()
    return PromptEmbeddings(null, validation)


class LoraCaptions(CaptionConditioning):
    """Stage 2's captions (:class:`~.conditioning.CaptionConditioning`: dropout to the null caption, validation at
    ``--resolution``), the validation under bf16 autocast when the base weights are bf16, and, given ``prompts``
    (:func:`encode_fixed_prompts`), for a pipeline without a text encoder: precomputed batches only, the null caption
    and validation prompts from ``prompts``.

    Raises:
        ValueError: the caption widths do not fit the transformer.
    """

    def __init__(self, config: LoraTrainingConfig, pipeline: Any, prompts: PromptEmbeddings | None = None):
        self.prompts = prompts
        if prompts is None:
            super().__init__(config, pipeline)
            return
        # The text encoder's checks, on what it encoded (the parent's __init__ needs the text encoder itself).
        width = prompts.null[0].shape[-1]
        if width != pipeline.transformer.config.caption_channels:
            raise ValueError(
                f"The text encoder outputs {width} channels but the transformer's caption_channels is "
                f"{pipeline.transformer.config.caption_channels}."
            )
        self.config, self.pipeline, self.null_caption = config, pipeline, prompts.null

    def prepare(self) -> None:
        if self.prompts is None:
            super().prepare()

    def check_batch(self, batch: Any) -> None:
        if self.prompts is not None and "prompt_embeds" not in batch:
            raise ValueError("This run has no text encoder (--features): its batches must hold prompt_embeds.")
        super().check_batch(batch)

    def sample_validation(self, device: torch.device) -> tuple[list[str], list]:
        """(prompts, PIL images) of the validation prompts at ``--resolution``."""
        bf16 = self.pipeline.transformer.dtype == torch.bfloat16
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
            if self.prompts is None:
                return super().sample_validation(device)
            if self.prompts.validation is None:
                return [], []
            return list(self.config.validation_prompts), self._sample_encoded(device)

    def _sample_encoded(self, device: torch.device) -> list:
        cfg, (embeds, mask), (null, null_mask) = self.config, self.prompts.validation, self.prompts.null
        count = embeds.shape[0]
        return self.pipeline(
            negative_prompt=None,
            prompt_embeds=embeds.to(device),
            prompt_attention_mask=mask.to(device),
            negative_prompt_embeds=null.expand(count, -1, -1).to(device),
            negative_prompt_attention_mask=null_mask.expand(count, -1).to(device),
            num_inference_steps=cfg.validation_inference_steps,
            guidance_scale=cfg.validation_guidance_scale,
            generator=torch.Generator(device).manual_seed(cfg.seed),
            use_resolution_binning=False,
            height=cfg.resolution,
            width=cfg.resolution,
        ).images


# ------------------------------------------------------------------------------------------------------ the run
def card_info(config: LoraTrainingConfig) -> dict[str, Any]:
    """The model card's training table entries of the adapter and data options."""
    info = {
        "adapter": config.adapter,
        "rank": config.rank,
        "alpha": config.alpha if config.alpha is not None else config.rank,
        "target modules": ", ".join(config.target_modules),
        "data": config.train_data or config.features,
        "caption column(s)": config.caption_column,
        "optimizer": config.optimizer,
        "caption dropout": config.caption_dropout,
    }
    if config.trigger_words:
        info["trigger words"] = ", ".join(config.trigger_words)
    if config.train_text_encoder_embeddings:
        tokens = ", ".join([*config.trigger_words, *config.train_embedding_tokens])
        rate = config.embedding_learning_rate or config.learning_rate
        info["T5 embeddings trained (pivotal tuning)"] = f"{tokens} (lr {rate})"
    for name, value in (("noise offset", config.noise_offset), ("min-SNR gamma", config.snr_gamma)):
        if value:
            info[name] = value
    if config.prediction_type:
        info["prediction type"] = config.prediction_type
    return info


def train_lora(config: LoraTrainingConfig) -> Path:
    """Train the adapter; returns the result folder ``<output_dir>/lora``.

    Every bad input (options, data without the caption column or without captions, an adapter type peft lacks,
    target modules that match nothing, rank <= 0) raises a ``ValueError`` before the first step.
    """
    if not config.pretrained_model_name_or_path:
        raise ValueError("--pretrained_model_name_or_path is required: the base pipeline the adapter is trained for.")
    check_data_options(config)
    check_lora_options(config)
    config = with_sequence_length(config)
    columns = caption_column_weights(config.caption_column)
    dataset = None
    if config.train_data is not None:
        dataset = load_streaming_dataset(config.train_data)
        check_captions(dataset, list(columns), f"--train_data {config.train_data}")
    accelerator = make_accelerator(config)
    data = make_loader(config, accelerator, dataset, caption_column=columns, multi_scale=config.multi_scale)

    prompts = encode_fixed_prompts(config) if config.features is not None else None
    # The base pipeline (PixArt-α or Σ, --transformer swapped in) as the stage scripts load it; without T5 for features.
    pipeline = load_pipeline(config, **({} if prompts is None else {"text_encoder": None}))
    check_trigger_words(pipeline.tokenizer, config.trigger_words)
    if config.train_text_encoder_embeddings:
        tokens = embedding_token_ids(pipeline.tokenizer, config.trigger_words, config.train_embedding_tokens)
    add_adapter(pipeline.transformer, config)
    conditioning: Conditioning = LoraCaptions(config, pipeline, prompts)
    card = {"trigger_words": list(config.trigger_words), "family": family_of(pipeline)}
    parameters: TrainedParameters = LoraAdapter(pipeline, card=card)
    if config.train_text_encoder_embeddings:  # pivotal tuning: the rows train with the adapter
        scale = (config.embedding_learning_rate or config.learning_rate) / config.learning_rate
        embeddings = TokenEmbeddings(pipeline.text_encoder, tokens, scale)
        conditioning = TokenCaptions(conditioning, embeddings)
        parameters = AdapterWithEmbeddings(parameters, embeddings)
    info = card_info(config)
    return train_with_iddpm(config, accelerator, pipeline, data, conditioning, parameters, info, config.noise_offset)


def main_lora(argv: list[str] | None = None) -> int:
    """Command-line entry: parse flags (and ``--config``), train, save (and push); a bad input exits with status 2."""
    return run_command(LoraTrainingConfig, train_lora, argv, DESCRIPTION)
