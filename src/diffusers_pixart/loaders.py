"""LoRA for PixArt-alpha pipelines: diffusers' loader API, and the files of the official PixArt LoRA script.

:class:`PixArtLoraLoaderMixin` gives ``PixArtAlphaPipeline`` the loader API of diffusers' DiT pipelines
(``load_lora_weights``, ``save_lora_weights``, ``fuse_lora``/``unfuse_lora``, ``set_adapters``,
``unload_lora_weights``, ...) with diffusers' key convention ``transformer.<module>.lora_A.weight``. The machinery is
diffusers' own: the mixin is ``SanaLoraLoaderMixin`` (the transformer-only ``LoraBaseMixin`` of diffusers' other
PixArt-family pipeline), with two additions:

* :meth:`~PixArtLoraLoaderMixin.lora_state_dict` also reads the files of the official PixArt-alpha LoRA script
  (``train_scripts/train_pixart_lora_hf.py``). That script wraps diffusers' transformer in ``peft.get_peft_model`` and
  writes ``adapter_model.safetensors`` + ``adapter_config.json`` (keys ``base_model.model.<module>.lora_A.weight``)
  and, through ``StableDiffusionPipeline.save_lora_weights``, ``pytorch_lora_weights.safetensors`` (keys
  ``unet.base_model.model.<module>...``). Module names are the same as ours. Its ``LoraConfig`` leaves ``lora_alpha``
  at peft's default of 8, so its LoRA scale is ``8 / rank`` (``8 / sqrt(rank)`` with ``--use_rslora``); the alpha is
  read from ``adapter_config.json`` when the folder has one, and is 8 otherwise. Files holding only a model's adapter
  (``get_peft_model_state_dict(transformer)`` or ``transformer.save_lora_adapter``: no prefix) load too.
* :meth:`~PixArtLoraLoaderMixin.load_lora_into_transformer` checks every LoRA tensor against the transformer first,
  so that a file for another architecture or model size, or with inconsistent ranks, is refused with a ``ValueError``
  naming the problem instead of being skipped with a warning or failing deep inside peft.

A LoRA trained with pivotal tuning (``examples/train_lora.py --train_text_encoder_embeddings``) has a
:data:`TEXT_ENCODER_EMBEDDINGS_NAME` next to its weights: the trained input-embedding rows of some T5 tokens,
``{token: vector (C,)}``. ``load_lora_weights`` of a folder or Hub repo with that file also writes those rows into the
pipeline's T5 (:func:`load_text_encoder_embeddings`), and ``unload_lora_weights`` puts the original rows back.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .diffusers_compat import SanaLoraLoaderMixin, get_peft_kwargs

#: The prefix of the transformer's keys in diffusers' pipeline LoRA files.
TRANSFORMER_PREFIX = "transformer."

#: Key prefixes of peft-wrapped models (``PeftModel``), as the official PixArt LoRA script writes them.
PEFT_MODEL_PREFIXES = ("unet.base_model.model.", "transformer.base_model.model.", "base_model.model.")

#: Top-level modules of ``PixArtTransformer2DModel``: keys starting with these are a model-level adapter.
TRANSFORMER_MODULES = ("pos_embed.", "adaln_single.", "caption_projection.", "transformer_blocks.", "proj_out.")

#: peft's default ``lora_alpha``, which the official PixArt LoRA script never changes.
OFFICIAL_LORA_ALPHA = 8.0

#: The peft config file next to ``adapter_model.safetensors``.
PEFT_CONFIG_NAME = "adapter_config.json"

#: The file of trained T5 input-embedding rows, ``{token: vector (C,)}``, next to a pivotal-tuning LoRA.
TEXT_ENCODER_EMBEDDINGS_NAME = "text_encoder_embeddings.safetensors"


def _read_peft_config(path_or_dict: Any, subfolder: str | None) -> dict[str, Any] | None:
    """``adapter_config.json`` of a local folder, or None (state dicts, single files, Hub repos, no such file)."""
    if not isinstance(path_or_dict, (str, os.PathLike)) or not os.path.isdir(path_or_dict):
        return None
    path = os.path.join(path_or_dict, subfolder or "", PEFT_CONFIG_NAME)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def convert_pixart_lora_state_dict(
    state_dict: Mapping[str, torch.Tensor], peft_config: Mapping[str, Any] | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Bring a PixArt LoRA state dict to diffusers' keys ``transformer.<module>.lora_{A,B}.weight``.

    Args:
        state_dict: LoRA tensors in diffusers' layout (returned as is), in the official script's peft layouts
            (``base_model.model.`` or ``unet.base_model.model.`` prefixes), or a model-level adapter (no prefix).
            Keys of none of these layouts are kept unchanged, for the checks of :func:`check_lora_state_dict`.
        peft_config: the ``adapter_config.json`` saved with a peft-layout file, for its ``lora_alpha`` and
            ``use_rslora``.

    Returns:
        ``(state_dict, metadata)``: the converted tensors, and for peft-layout files the ``LoraConfig`` arguments
        (prefixed ``transformer.``, as diffusers stores them in safetensors metadata) that give the scale
        ``lora_alpha / rank`` the file was trained with; None otherwise.
    """
    converted: dict[str, torch.Tensor] = {}
    from_peft_model = False
    for key, value in state_dict.items():
        peft_prefix = next((p for p in PEFT_MODEL_PREFIXES if key.startswith(p)), None)
        if peft_prefix is not None:
            from_peft_model = True
            key = TRANSFORMER_PREFIX + key[len(peft_prefix) :]
        elif key.startswith(TRANSFORMER_MODULES):
            key = TRANSFORMER_PREFIX + key
        converted[key] = value
    if not from_peft_model:
        return converted, None

    alpha = float((peft_config or {}).get("lora_alpha", OFFICIAL_LORA_ALPHA))
    use_rslora = bool((peft_config or {}).get("use_rslora", False))
    model_keys = {k[len(TRANSFORMER_PREFIX) :]: v for k, v in converted.items() if k.startswith(TRANSFORMER_PREFIX)}
    ranks = {f"^{k}": v.shape[1] for k, v in model_keys.items() if "lora_B" in k and v.ndim > 1}
    # rsLoRA scales by alpha / sqrt(r), which is plain LoRA's alpha' / r with alpha' = alpha * sqrt(r) per module.
    alphas = {
        f"{k.split('.lora_B.')[0].lstrip('^')}.alpha": alpha * (math.sqrt(r) if use_rslora else 1.0)
        for k, r in ranks.items()
    }
    kwargs = get_peft_kwargs(ranks, alphas, model_keys, is_unet=True)
    return converted, {TRANSFORMER_PREFIX + name: value for name, value in kwargs.items()}


def check_lora_state_dict(state_dict: Mapping[str, torch.Tensor], transformer: nn.Module) -> None:
    """Raise a ``ValueError`` unless every tensor is a consistent LoRA factor of a layer of ``transformer``.

    ``state_dict`` has diffusers' keys ``transformer.<module>.lora_A.weight`` (r, in) / ``lora_B.weight`` (out, r)
    for Linear layers, (r, in, kh, kw) / (out, r, 1, 1) for the patch-embedding convolution; ``lora_B.bias`` (out,)
    and DoRA's ``lora_magnitude_vector`` (out,) are allowed.
    """
    foreign = [k for k in state_dict if not k.startswith(TRANSFORMER_PREFIX)]
    if foreign:
        raise ValueError(
            f"This LoRA file is not for a PixArt transformer: {len(foreign)} of its {len(state_dict)} keys are not "
            f"PixArt transformer layers (e.g. {foreign[:3]}); it was made for another architecture."
        )
    modules = dict(transformer.named_modules())
    factors: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state_dict.items():
        name, sep, part = key[len(TRANSFORMER_PREFIX) :].partition(".lora_")
        if not sep:
            raise ValueError(f"{key!r} is not a LoRA tensor (no '.lora_A'/'.lora_B' in the name).")
        factors.setdefault(name, {})["lora_" + part] = value

    unknown = [name for name in factors if name not in modules]
    if unknown:
        raise ValueError(
            f"This LoRA file adapts layers that {type(transformer).__name__} does not have (e.g. {unknown[:3]}): it "
            "was made for another architecture."
        )
    for name, parts in factors.items():
        layer = modules[name]
        layer = getattr(layer, "base_layer", layer)  # a layer that already carries an adapter
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            raise ValueError(f"LoRA for {name!r}, a {type(layer).__name__}: only Linear and Conv2d layers take LoRA.")
        down, up = parts.get("lora_A.weight"), parts.get("lora_B.weight")
        if down is None or up is None:
            raise ValueError(f"LoRA for {name!r} has {sorted(parts)}: both lora_A.weight and lora_B.weight are needed.")
        if down.shape[0] != up.shape[1]:
            raise ValueError(
                f"Mismatched LoRA ranks for {name!r}: lora_A {tuple(down.shape)} has rank {down.shape[0]} but "
                f"lora_B {tuple(up.shape)} has rank {up.shape[1]}."
            )
        fan_in, fan_out = (
            (layer.in_features, layer.out_features)
            if isinstance(layer, nn.Linear)
            else (layer.in_channels, layer.out_channels)
        )
        if down.shape[1] != fan_in or up.shape[0] != fan_out:
            raise ValueError(
                f"LoRA for {name!r} maps {down.shape[1]} -> {up.shape[0]} features but the layer maps "
                f"{fan_in} -> {fan_out}: the file was made for a model of another size."
            )


def read_text_encoder_embeddings(pipe: Any, path: str | os.PathLike) -> dict[int, torch.Tensor]:
    """The rows of a :data:`TEXT_ENCODER_EMBEDDINGS_NAME` file by token id of ``pipe.tokenizer``, checked against
    ``pipe.text_encoder``'s input embeddings (nothing is changed).

    Raises:
        ValueError: the pipeline has no tokenizer or text encoder, the tokenizer lacks a token of the file, or a
            vector's width is not the text encoder's (a file for another text encoder).
    """
    from safetensors.torch import load_file

    if getattr(pipe, "tokenizer", None) is None or getattr(pipe, "text_encoder", None) is None:
        raise ValueError(f"{os.fspath(path)} holds T5 embedding rows: the pipeline needs a tokenizer and text encoder.")
    rows = load_file(os.fspath(path))
    vocab = pipe.tokenizer.get_vocab()
    weight = pipe.text_encoder.get_input_embeddings().weight
    missing = [token for token in rows if token not in vocab or vocab[token] >= weight.shape[0]]
    if missing:
        raise ValueError(
            f"{os.fspath(path)} trains the tokens {missing}, which this pipeline's tokenizer and text encoder lack: "
            "it was made for another tokenizer."
        )
    wrong = {token: tuple(row.shape) for token, row in rows.items() if tuple(row.shape) != (weight.shape[1],)}
    if wrong:
        raise ValueError(
            f"{os.fspath(path)} holds embedding rows of shapes {wrong} but the text encoder's rows have "
            f"{weight.shape[1]} channels: it was made for another text encoder."
        )
    return {vocab[token]: row for token, row in rows.items()}


def write_text_encoder_embeddings(pipe: Any, rows: Mapping[int, torch.Tensor]) -> None:
    """Write ``rows`` (token id -> vector) into ``pipe.text_encoder``'s input embeddings in place, keeping each
    row's value from before the first write for :func:`restore_text_encoder_embeddings`."""
    weight = pipe.text_encoder.get_input_embeddings().weight
    originals = pipe.__dict__.setdefault("_original_embedding_rows", {})
    with torch.no_grad():
        for index, row in rows.items():
            originals.setdefault(index, weight[index].detach().clone())
            weight[index] = row.to(weight.device, weight.dtype)


def load_text_encoder_embeddings(pipe: Any, path: str | os.PathLike) -> list[str]:
    """Write the trained T5 input-embedding rows of a :data:`TEXT_ENCODER_EMBEDDINGS_NAME` file (pivotal tuning,
    ``examples/train_lora.py --train_text_encoder_embeddings``) into ``pipe.text_encoder``; every other row is left
    as it was. ``load_lora_weights`` calls this for a LoRA folder that has the file.

    Returns:
        The tokens whose rows were written.

    Raises:
        ValueError: see :func:`read_text_encoder_embeddings`; the pipeline is left unchanged.
    """
    rows = read_text_encoder_embeddings(pipe, path)
    write_text_encoder_embeddings(pipe, rows)
    return pipe.tokenizer.convert_ids_to_tokens(list(rows))


def restore_text_encoder_embeddings(pipe: Any) -> None:
    """Put back the T5 input-embedding rows that :func:`write_text_encoder_embeddings` replaced (none: nothing)."""
    originals = pipe.__dict__.pop("_original_embedding_rows", {})
    if originals:
        weight = pipe.text_encoder.get_input_embeddings().weight
        with torch.no_grad():
            for index, row in originals.items():
                weight[index] = row


def text_encoder_embeddings_file(source: Any, subfolder: str | None = None, **hub_kwargs: Any) -> str | None:
    """The :data:`TEXT_ENCODER_EMBEDDINGS_NAME` of a LoRA folder or Hub repo ``source``, or None when it has none
    (state dicts and single files have none). ``hub_kwargs``: ``revision``, ``token``, ``cache_dir`` for the Hub."""
    if not isinstance(source, (str, os.PathLike)) or os.path.isfile(source):
        return None
    if os.path.isdir(source):
        path = os.path.join(source, subfolder or "", TEXT_ENCODER_EMBEDDINGS_NAME)
        return path if os.path.isfile(path) else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    kwargs = {key: hub_kwargs[key] for key in ("revision", "token", "cache_dir") if hub_kwargs.get(key) is not None}
    try:
        return hf_hub_download(os.fspath(source), TEXT_ENCODER_EMBEDDINGS_NAME, subfolder=subfolder, **kwargs)
    except EntryNotFoundError:
        return None


#: The peft adapter types other than LoRA that :meth:`PixArtLoraLoaderMixin.load_lora_weights` reads, by the
#: ``peft_type`` of the config in the file's metadata, with the peft config class each is rebuilt with.
LYCORIS_CONFIGS = {"LOHA": "LoHaConfig", "LOKR": "LoKrConfig"}


def lycoris_type(metadata: Mapping[str, Any] | None) -> str | None:
    """``"LOHA"`` or ``"LOKR"`` when a LoRA file's metadata holds such a peft config for the transformer, else None."""
    peft_type = (metadata or {}).get(TRANSFORMER_PREFIX + "peft_type")
    return peft_type if peft_type in LYCORIS_CONFIGS else None


def load_lycoris_adapter(
    state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, Any], transformer: nn.Module, adapter_name: str
) -> None:
    """Add a LoHa or LoKr adapter ``adapter_name`` to ``transformer`` from a file written by
    ``hub.save_lora_weights`` (keys ``transformer.<module>.hada_*``/``lokr_*``; the peft config in ``metadata``).

    Raises:
        ValueError: a key outside the transformer, a layer it lacks or that takes no adapter, or a tensor whose shape
            is not the one the adapter has on this transformer (a file for a model of another size); the transformer
            is left as it was.
    """
    import peft
    from peft.utils import set_peft_model_state_dict

    foreign = [k for k in state_dict if not k.startswith(TRANSFORMER_PREFIX)]
    if foreign:
        raise ValueError(f"This adapter file is not for a PixArt transformer: keys such as {foreign[:3]}.")
    state = {key[len(TRANSFORMER_PREFIX) :]: value for key, value in state_dict.items()}
    modules = dict(transformer.named_modules())
    layers = {key.rsplit(".", 1)[0] for key in state}
    unknown = sorted(name for name in layers if name not in modules)
    if unknown:
        raise ValueError(
            f"This adapter file adapts layers that {type(transformer).__name__} does not have (e.g. {unknown[:3]}): it "
            "was made for another architecture."
        )
    kwargs = {k[len(TRANSFORMER_PREFIX) :]: v for k, v in metadata.items() if k.startswith(TRANSFORMER_PREFIX)}
    config_cls = getattr(peft, LYCORIS_CONFIGS[kwargs["peft_type"]])
    fields = set(config_cls.__dataclass_fields__)
    config = config_cls(**{k: v for k, v in kwargs.items() if k in fields and k != "peft_type"})
    transformer.add_adapter(config, adapter_name=adapter_name)
    own = {name: param for name, param in transformer.named_parameters() if f".{adapter_name}" in name}
    wrong = []
    for key, value in state.items():
        layer, part = key.rsplit(".", 1)
        param = own.get(f"{layer}.{part}.{adapter_name}")
        if param is None or tuple(param.shape) != tuple(value.shape):
            wrong.append(f"{key} {tuple(value.shape)} vs {None if param is None else tuple(param.shape)}")
    if wrong:
        transformer.delete_adapters(adapter_name)
        raise ValueError(
            f"This {kwargs['peft_type']} file does not fit the transformer: {wrong[:3]} (file vs model): it was made "
            "for a model of another size."
        )
    set_peft_model_state_dict(transformer, state, adapter_name=adapter_name)


class PixArtLoraLoaderMixin(SanaLoraLoaderMixin):
    """diffusers' LoRA loader API for PixArt-alpha pipelines (the LoRA goes into ``pipeline.transformer``).

    ``load_lora_weights(repo_or_path_or_dict, adapter_name=...)``, ``save_lora_weights(folder,
    transformer_lora_layers=...)``, ``fuse_lora(lora_scale=...)``, ``unfuse_lora()``, ``set_adapters(names,
    weights)``, ``disable_lora()``/``enable_lora()``, ``delete_adapters``, ``unload_lora_weights()`` work as in
    diffusers' pipelines; see the module docstring for the extra file layouts and the checks.
    """

    @classmethod
    def lora_state_dict(
        cls, pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor], **kwargs
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
        """The LoRA tensors of a folder, file, Hub repo or state dict, with diffusers' keys.

        Takes the keyword arguments of diffusers' ``lora_state_dict`` (``weight_name``, ``subfolder``, ``revision``,
        ``token``, ..., ``return_lora_metadata``). Returns the state dict, or ``(state_dict, metadata)``.
        """
        return_metadata = kwargs.pop("return_lora_metadata", False)
        peft_config = _read_peft_config(pretrained_model_name_or_path_or_dict, kwargs.get("subfolder"))
        state_dict, metadata = super().lora_state_dict(
            pretrained_model_name_or_path_or_dict, return_lora_metadata=True, **kwargs
        )
        state_dict, peft_metadata = convert_pixart_lora_state_dict(state_dict, peft_config)
        metadata = metadata or peft_metadata
        return (state_dict, metadata) if return_metadata else state_dict

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        hotswap: bool = False,
        **kwargs,
    ) -> None:
        """diffusers' ``load_lora_weights`` (LoRA and DoRA), and LoHa and LoKr adapters saved with their peft config
        in the safetensors metadata (``examples/train_lora.py --adapter loha|lokr``): those are rebuilt from that
        config (:func:`load_lycoris_adapter`). The adapter name defaults to ``default_<n>``, as diffusers names them.
        A folder or repo with a :data:`TEXT_ENCODER_EMBEDDINGS_NAME` also gets its T5 rows written
        (:func:`load_text_encoder_embeddings`).

        Raises:
            ValueError: the file does not fit the transformer (see :func:`check_lora_state_dict`), or the embeddings
                file does not fit the tokenizer and text encoder (see :func:`read_text_encoder_embeddings`).
        """
        source = pretrained_model_name_or_path_or_dict
        embeddings: dict[int, torch.Tensor] = {}
        if not isinstance(source, dict):
            read = {k: v for k, v in kwargs.items() if k != "low_cpu_mem_usage"}
            state_dict, metadata = self.lora_state_dict(source, return_lora_metadata=True, **read)
            rows_file = text_encoder_embeddings_file(source, **read)
            if rows_file is not None:  # checked before the LoRA loads, written once it has
                embeddings = read_text_encoder_embeddings(self, rows_file)
            if lycoris_type(metadata) is not None:
                if hotswap:
                    raise ValueError("hotswap=True is not supported for LoHa and LoKr adapters.")
                transformer = self.transformer
                taken = set(getattr(transformer, "peft_config", {}) or {})
                if adapter_name is None:
                    adapter_name = next(f"default_{i}" for i in itertools.count() if f"default_{i}" not in taken)
                elif adapter_name in taken:
                    raise ValueError(f"Adapter name {adapter_name!r} is already in use in the transformer.")
                load_lycoris_adapter(state_dict, metadata, transformer, adapter_name)
                write_text_encoder_embeddings(self, embeddings)
                return
        super().load_lora_weights(source, adapter_name=adapter_name, hotswap=hotswap, **kwargs)
        write_text_encoder_embeddings(self, embeddings)

    def unload_lora_weights(self, *args: Any, **kwargs: Any) -> None:
        """diffusers' ``unload_lora_weights``, and the T5 embedding rows a pivotal-tuning LoRA wrote put back."""
        restore_text_encoder_embeddings(self)
        super().unload_lora_weights(*args, **kwargs)

    @classmethod
    def load_lora_into_transformer(
        cls,
        state_dict: dict[str, torch.Tensor],
        transformer: nn.Module,
        adapter_name: str | None = None,
        _pipeline: Any = None,
        low_cpu_mem_usage: bool = False,
        hotswap: bool = False,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Check ``state_dict`` against ``transformer`` (see :func:`check_lora_state_dict`), then load it as an adapter.

        Raises:
            ValueError: the LoRA does not fit the transformer, or ``adapter_name`` is taken.
        """
        check_lora_state_dict(state_dict, transformer)
        super().load_lora_into_transformer(
            state_dict,
            transformer,
            adapter_name=adapter_name,
            _pipeline=_pipeline,
            low_cpu_mem_usage=low_cpu_mem_usage,
            hotswap=hotswap,
            metadata=metadata,
        )
